"""CoMask's box geometry (sbrrepro/models/comask/geometry.py): the box rule of Eqs. 8-9 on hand-made
masks, through CoMaskCLHead.refine_boxes too, the training jitter; and the authors' ratio level mapping
(ratio_extractor.py)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mmdet")

from sbrrepro.models.comask import CoMaskCLHead, RatioRoIExtractor  # noqa: E402
from sbrrepro.models.comask.geometry import decode_dense_boxes, jitter_boxes, mask_to_grid, weighted_box  # noqa: E402
from sbrrepro.models.comask.ratio_extractor import ratio_levels  # noqa: E402


def test_ratio_level_mapping():
    """ceil(3 - log2(image area / box area)) clamped to 0..3, on each RoI's own image."""
    rois = torch.tensor([[0, 0, 0, 100, 100], [0, 0, 0, 100, 50], [0, 0, 0, 50, 25], [0, 0, 0, 52, 25],
                         [0, 0, 0, 4, 4], [1, 0, 0, 100, 100]], dtype=torch.float32)
    areas = torch.tensor([1e4, 1e4, 1e4, 1e4, 1e4, 4e4])
    assert ratio_levels(rois, areas, 4).tolist() == [3, 2, 0, 1, 0, 1]
    extractor = RatioRoIExtractor(dict(type="RoIAlign", output_size=7, sampling_ratio=0), 4, [4, 8, 16, 32])
    feats = [torch.zeros(2, 4, 25 // 2 ** i, 25 // 2 ** i) for i in range(4)]
    assert extractor._levels(feats, rois, torch.tensor([[100, 100], [200, 200]])).tolist() == [3, 2, 0, 1, 0, 1]
    # without image sizes: the padded batch (finest map x its stride, 100x100 here) for every image
    assert extractor._levels(feats, rois, None).tolist() == [3, 2, 0, 1, 0, 3]


# ---- Eqs. 8-9 and the jitter


def _dense_case():
    boxes = torch.tensor([[10.0, 20.0, 80.0, 60.0], [0.0, 0.0, 28.0, 28.0]])
    dist = torch.rand(2, 4, 7, 7, generator=torch.Generator().manual_seed(4))
    return boxes, dist, decode_dense_boxes(boxes, dist).view(2, 7, 7, 4)


def test_dense_boxes_are_distances_from_bin_centres():
    boxes, dist, dense = _dense_case()
    i, j = 2, 5  # row (y), column (x)
    w, h = 70.0, 40.0
    cx, cy = 10 + w * (j + 0.5) / 7, 20 + h * (i + 0.5) / 7
    left, top, right, bottom = dist[0, :, i, j].tolist()
    torch.testing.assert_close(dense[0, i, j], torch.tensor([cx - left * w, cy - top * h, cx + right * w,
                                                             cy + bottom * h]))


def test_mask_weighted_box_on_the_left_half():
    """A mask that is 1 on the left 12 of 28 columns: M_s is 1 on the grid's first 3 columns, the box is
    the mean of those pixels' boxes; through CoMaskCLHead.refine_boxes too."""
    boxes, dist, dense = _dense_case()
    logits = torch.full((2, 28, 28), -20.0)
    logits[:, :, :12] = 20.0
    grid = mask_to_grid(logits, 7)
    torch.testing.assert_close(grid[:, :, :3], torch.ones(2, 7, 3))
    assert grid[:, :, 3:].max() < 1e-6
    expected = dense[:, :, :3].reshape(2, -1, 4).mean(1)
    torch.testing.assert_close(weighted_box(dense.view(2, -1, 4), grid.flatten(1)), expected)
    head = CoMaskCLHead(num_classes=2, in_channels=32, conv_out_channels=32, fc_out_channels=16)
    preds = dict(dist=dist, mask_preds=torch.stack([torch.zeros(2, 28, 28), logits], 1), fg=None)
    torch.testing.assert_close(head.refine_boxes(boxes, preds, torch.tensor([1, 1])), expected)
    # "w/o CL": D2Det's foreground map, a plain mean over the pixels whose logit is > 0
    d2det = CoMaskCLHead(num_classes=2, in_channels=32, conv_out_channels=32, fc_out_channels=16, fg_map=True)
    fg = torch.full((2, 1, 7, 7), -1.0)
    fg[..., :3] = 1.0
    preds = dict(dist=dist, mask_preds=torch.zeros(2, 2, 28, 28), fg=fg)
    torch.testing.assert_close(d2det.refine_boxes(boxes, preds, torch.tensor([1, 1])), expected)
    # the code's M_s: sigmoid of the bilinearly resized logits
    torch.testing.assert_close(mask_to_grid(torch.full((2, 28, 28), 0.7), 7, "bilinear"),
                               torch.full((2, 7, 7), 0.7).sigmoid())
    # a half-covered column (M_s = 0.5, not > 0.5) stays out
    logits[:, :, 12:14] = 20.0
    torch.testing.assert_close(weighted_box(dense.view(2, -1, 4), mask_to_grid(logits, 7).flatten(1)), expected)


def test_weighted_box_general_and_fallback():
    _, _, dense = _dense_case()
    dense = dense.view(2, -1, 4)
    weights = torch.rand(2, 49, generator=torch.Generator().manual_seed(5))
    kept = weights * (weights > 0.5)
    torch.testing.assert_close(weighted_box(dense, weights), (dense * kept[..., None]).sum(1) / kept.sum(1)[:, None])
    low = weights * 0.4  # nothing above 0.5: every pixel with its weight
    torch.testing.assert_close(weighted_box(dense, low), (dense * low[..., None]).sum(1) / low.sum(1)[:, None])
    torch.testing.assert_close(weighted_box(dense, torch.zeros(2, 49)), dense.mean(1))  # no weight at all


def test_jitter_stays_within_bounds():
    torch.manual_seed(0)
    xy = torch.rand(4000, 2) * 500 + 250
    wh = torch.rand(4000, 2) * 200 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    out = jitter_boxes(boxes, (2000, 2000), 0.15)
    centre, new_centre = (boxes[:, :2] + boxes[:, 2:]) / 2, (out[:, :2] + out[:, 2:]) / 2
    new_wh = out[:, 2:] - out[:, :2]
    eps = 1e-4
    assert ((new_centre - centre).abs() <= 0.15 * wh + eps).all()
    assert ((new_wh / wh) >= 0.85 - eps).all() and ((new_wh / wh) <= 1.15 + eps).all()
    assert (new_wh / wh).min() < 0.87 and (new_wh / wh).max() > 1.13  # the whole range is used
    border = torch.tensor([[0.0, 0.0, 50.0, 40.0], [90.0, 70.0, 128.0, 100.0]]).repeat(500, 1)
    clipped = jitter_boxes(border, (100, 128), 0.15)
    assert (clipped >= 0).all() and (clipped[:, 0::2] <= 128).all() and (clipped[:, 1::2] <= 100).all()
    torch.testing.assert_close(jitter_boxes(boxes, (2000, 2000), 0.0), boxes)
