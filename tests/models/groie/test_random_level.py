"""The random FPN level of GRoIE's Table I: each RoI pooled from a level drawn uniformly at random, in
training and testing, alone and inside a Mask R-CNN training on the CPU."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import build, fpn_features, generated, predict, train_step

pytest.importorskip("mmcv._ext")

STRIDES = [4, 8, 16, 32]
BOX_ROI_LAYER = dict(type="RoIAlign", output_size=7, sampling_ratio=2)
ROIS = torch.tensor([[0, 2.0, 3.0, 22.0, 23.0], [1, 10.0, 0.0, 50.0, 40.0], [0, 20.0, 30.0, 100.0, 110.0],
                     [1, 4.0, 6.0, 124.0, 126.0], [1, 60.0, 60.0, 80.0, 80.0]])


def random_level(channels: int = 8):
    from sbrrepro.models.groie import RandomLevelRoIExtractor

    return RandomLevelRoIExtractor(roi_layer=BOX_ROI_LAYER, out_channels=channels, featmap_strides=STRIDES)


def test_random_levels_are_uniform_draws_on_the_rois_device():
    m = random_level()
    rois = ROIS[[0, 1, 2, 3, 4] * 40]
    for mode in (m.train, m.eval):  # drawn at random in testing too
        mode()
        torch.manual_seed(3)
        levels = m.map_roi_levels(rois, 4)
        assert levels.dtype == torch.long and levels.shape == (len(rois),) and levels.device == rois.device
        assert levels.min() >= 0 and levels.max() < 4
        assert set(levels.tolist()) == {0, 1, 2, 3}, "the levels do not vary across RoIs"
        torch.manual_seed(3)
        assert torch.equal(m.map_roi_levels(rois, 4), levels)
        assert not torch.equal(m.map_roi_levels(rois, 4), levels)  # the next draws differ
    assert m.map_roi_levels(rois.to("meta"), 4).device.type == "meta"
    assert m.map_roi_levels(rois[:0], 4).shape == (0,)


def test_random_level_pools_each_roi_from_its_drawn_level():
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor

    m = random_level()
    feats = fpn_features(8)
    torch.manual_seed(5)
    levels = m.map_roi_levels(ROIS, 4)
    torch.manual_seed(5)
    out = m(feats, ROIS)
    stock = SingleRoIExtractor(roi_layer=BOX_ROI_LAYER, out_channels=8, featmap_strides=STRIDES)
    assert out.shape == stock(feats, ROIS).shape == (len(ROIS), 8, 7, 7)
    expected = torch.cat([m.roi_layers[lvl](feats[lvl], ROIS[k:k + 1]) for k, lvl in enumerate(levels.tolist())])
    torch.testing.assert_close(out, expected)
    assert m(feats, ROIS[:0]).shape == (0, 8, 7, 7)


@pytest.mark.training
def test_mask_rcnn_with_random_levels_trains_on_cpu(smoke):
    cfg = generated("sbr-cnn/table3", 1, smoke)
    roi_head = cfg["model"]["roi_head"]
    roi_head["bbox_roi_extractor"] = {**roi_head["bbox_roi_extractor"], "type": "RandomLevelRoIExtractor"}
    model = build(cfg)
    assert type(model.roi_head.bbox_roi_extractor).__name__ == "RandomLevelRoIExtractor"
    assert type(model.roi_head.mask_roi_extractor).__name__ == "SingleRoIExtractor"
    losses = train_step(cfg, model)
    assert {"loss_cls", "loss_bbox", "loss_mask"} <= set(losses)
    predict(cfg, model)
