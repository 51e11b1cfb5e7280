"""SBR-CNN Fig. 1: the best anchor IoU of each ground-truth box, checked by hand and by brute force."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sbrrepro.configs import full_scale
from sbrrepro.dataset import SyntheticSpec, ensure_dataset
from sbrrepro.figures.anchor_coverage import DEFAULT_THRESHOLDS, featmap_sizes, max_anchor_ious, percent_without_anchor
from tests.helpers import cli_json, generated, write_coco

SCALE = (1333, 800)
# the anchors of Mask R-CNN's RPN, as the Fig. 1 plan generates them (paths only, no data read)
MASK_RCNN_RPN_ANCHORS = generated("sbr-cnn/fig1", 1, full_scale(Path("coco")))["anchor_generator"]


def _brute_force(ann_file: Path, generator_cfg: dict, scale: tuple[int, int], pad: int = 32) -> np.ndarray:
    """Every anchor of every image, from mmdet's own grid_priors and bbox_overlaps."""
    import mmcv
    import torch
    from mmdet.registry import TASK_UTILS
    from mmdet.structures.bbox import bbox_overlaps

    gen = TASK_UTILS.build(dict(generator_cfg))
    coco = json.loads(ann_file.read_text())
    images = {im["id"]: im for im in coco["images"]}
    out = []
    for ann in coco["annotations"]:
        if ann["iscrowd"] or ann["bbox"][2] < 1 or ann["bbox"][3] < 1:
            continue
        im = images[ann["image_id"]]
        (new_w, new_h), _ = mmcv.rescale_size((im["width"], im["height"]), scale, return_scale=True)
        sx, sy = new_w / im["width"], new_h / im["height"]
        x, y, w, h = ann["bbox"]
        box = torch.tensor([[x * sx, y * sy, (x + w) * sx, (y + h) * sy]], dtype=torch.float64)
        box[:, 0::2] = box[:, 0::2].clamp(0, new_w)
        box[:, 1::2] = box[:, 1::2].clamp(0, new_h)
        ph, pw = math.ceil(new_h / pad) * pad, math.ceil(new_w / pad) * pad
        sizes = [(math.ceil(ph / s[1]), math.ceil(pw / s[0])) for s in gen.strides]
        anchors = torch.cat(gen.grid_priors(sizes, dtype=torch.float64, device="cpu"))
        out.append(float(bbox_overlaps(box, anchors).max()))
    return np.array(out)


@pytest.fixture
def hand_made(tmp_path: Path) -> Path:
    # Image 1 is already 1333x800 (resize factor 1); its padded size is 1344x800.
    # Image 2 (2666x1600) is halved by the resize. Image 3 (600x500) grows by 1.6 to 960x800 (the short
    # edge limits: min(1333/600, 800/500)).
    return write_coco(tmp_path / "hand.json", [(1333, 800), (2666, 1600), (600, 500)], [
        (1, [24, 24, 32, 32], 0),    # = the 32x32 anchor (stride 4, ratio 1) at cell (10, 10): IoU 1
        (1, [26, 24, 32, 32], 0),    # that anchor shifted by 2 px: 30*32 / (2*1024 - 30*32)
        (1, [24, 24, 32, 32], 1),    # crowd: not a training box
        (1, [100, 100, 0.5, 40], 0),  # narrower than 1 px: MMDetection drops it
        (2, [48, 48, 64, 64], 0),    # halved: [24, 24, 56, 56], the anchor again
        (3, [15, 15, 20, 20], 0),    # x1.6: [24, 24, 56, 56] again, up to rounding
    ])


def test_hand_made_boxes_have_the_reasoned_ious(hand_made: Path):
    ious = max_anchor_ious(hand_made, MASK_RCNN_RPN_ANCHORS, SCALE)
    assert len(ious) == 4  # crowd and degenerate boxes skipped
    assert ious[0] == 1.0
    assert ious[1] == pytest.approx(960 / 1088)  # no other shape comes closer (ratio 0.5 tops at ~0.55)
    assert ious[2] == 1.0
    assert ious[3] == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(ious, _brute_force(hand_made, MASK_RCNN_RPN_ANCHORS, SCALE), atol=1e-9)


def test_resize_scales_the_boxes(hand_made: Path):
    # At (1000, 600) image 3 grows by 1.2 (600 / 500): its box becomes [18, 18, 42, 42], a 24x24 box inside
    # the nearest 32x32 anchor (centre 2 px away): IoU 576 / 1024. Image 2 shrinks by 0.375 to
    # int(2666 * 0.375 + 0.5) = 1000 px wide, so x scales by 1000 / 2666 and y by 0.375, as MMDetection's
    # Resize does: its box is 64000 / 2666 px wide, 24 high, still inside a 32x32 anchor.
    ious = max_anchor_ious(hand_made, MASK_RCNN_RPN_ANCHORS, (1000, 600))
    assert ious[3] == pytest.approx(576 / 1024)
    assert ious[2] == pytest.approx(64000 / 2666 * 24 / 1024, rel=1e-12)
    np.testing.assert_allclose(ious, _brute_force(hand_made, MASK_RCNN_RPN_ANCHORS, (1000, 600)), atol=1e-9)


def test_boxes_near_the_border_see_anchors_beyond_it(tmp_path: Path):
    # A clipped box at the bottom-right corner of an image whose padded size is not its own.
    ann = write_coco(tmp_path / "edge.json", [(1333, 790), (333, 517)],
                      [(1, [1300, 700, 100, 100], 0), (2, [300, 10, 33, 500], 0), (2, [0, 0, 333, 517], 0)])
    for scale, pad in [(SCALE, 32), ((600, 400), 1), ((1000, 600), 64)]:
        np.testing.assert_allclose(max_anchor_ious(ann, MASK_RCNN_RPN_ANCHORS, scale, pad),
                                   _brute_force(ann, MASK_RCNN_RPN_ANCHORS, scale, pad), atol=1e-9)


def test_percentages_count_boxes_strictly_below_the_threshold():
    ious = np.array([0.2, 0.5, 0.7, 1.0])
    assert percent_without_anchor(ious, [0.1, 0.5, 0.6, 0.7, 1.0, 1.01]) == [0.0, 25.0, 50.0, 50.0, 75.0, 100.0]
    with pytest.raises(ValueError):
        percent_without_anchor([], [0.5])


def test_featmap_sizes_are_those_of_resnet_and_fpn():
    import torch
    from mmdet.models.backbones import ResNet
    from mmdet.models.necks import FPN

    backbone = ResNet(depth=18, out_indices=(0, 1, 2, 3))  # its train() returns None: no chained .eval()
    neck = FPN(in_channels=[64, 128, 256, 512], out_channels=8, num_outs=5)
    backbone.eval()
    strides = [(s, s) for s in (4, 8, 16, 32, 64)]
    for h, w in [(96, 160), (97, 131)]:
        with torch.no_grad():
            maps = neck(backbone(torch.zeros(1, 3, h, w)))
        expected = [tuple(m.shape[-2:]) for m in maps]
        assert [tuple(s[0]) for s in featmap_sizes(np.array([[h, w]], float), strides)] == expected


def test_synthetic_dataset_matches_brute_force(tmp_path: Path):
    root = ensure_dataset(tmp_path, SyntheticSpec(train_images=12, val_images=2))
    ann = root / "annotations" / "instances_train.json"
    n_boxes = len(json.loads(ann.read_text())["annotations"])
    ious = max_anchor_ious(ann, MASK_RCNN_RPN_ANCHORS, SCALE)
    assert ious.shape == (n_boxes,)
    assert ((ious >= 0) & (ious <= 1)).all()
    np.testing.assert_allclose(ious, _brute_force(ann, MASK_RCNN_RPN_ANCHORS, SCALE), atol=1e-9)
    percents = percent_without_anchor(ious, DEFAULT_THRESHOLDS)
    assert percents == sorted(percents) and percents[-1] <= 100.0


@pytest.mark.training
def test_plot_anchors_draws_the_embedded_dataset(tmp_path: Path, cli):
    """`plot-anchors` without COCO: the figure plan's anchors on the embedded dataset, the figure in
    PNG and PDF and its numbers in JSON, nothing half-written left beside them."""
    study = tmp_path / "study"
    ((label, curve),) = cli_json("plot-anchors", "--study", str(study), timeout=300).items()
    assert label.startswith("embedded (shapes-") and curve["boxes"] > 0
    root = ensure_dataset(study / "data")
    ious = max_anchor_ious(root / "annotations" / "instances_train.json", MASK_RCNN_RPN_ANCHORS, SCALE)
    assert curve["percent_without_anchor"] == percent_without_anchor(ious, DEFAULT_THRESHOLDS)
    figures = study / "figures"
    assert (figures / "sbr-cnn-fig1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in figures.iterdir()) == ["sbr-cnn-fig1.json", "sbr-cnn-fig1.pdf", "sbr-cnn-fig1.png"]
