"""The multi-scale subnetwork for RoI pooling (the mask branch's RoI extractor), alone and inside a Mask
R-CNN training on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sbrrepro.params import trainable
from tests.helpers import build, fpn_features, generated, predict, train_step

pytest.importorskip("mmcv._ext")

STRIDES = [4, 8, 16, 32]
BOX_ROI_LAYER = dict(type="RoIAlign", output_size=7, sampling_ratio=2)


# Sides 20, 40, 80, 120 with finest_scale 14 map to levels 0, 1, 2, 3 (thresholds 28, 56, 112).
ROIS = torch.tensor([[0, 2.0, 3.0, 22.0, 23.0], [1, 10.0, 0.0, 50.0, 40.0], [0, 20.0, 30.0, 100.0, 110.0],
                     [1, 4.0, 6.0, 124.0, 126.0], [1, 60.0, 60.0, 80.0, 80.0]])
FINEST = 14


def subnet(in_channels: int = 8, out_channels: int = 8, strides: list[int] = STRIDES, **kwargs):
    from sbrrepro.models.ms_subnet import MultiScaleSubnetRoIExtractor

    torch.manual_seed(0)
    return MultiScaleSubnetRoIExtractor(in_channels=in_channels, out_channels=out_channels, featmap_strides=strides,
                                        **kwargs)


def subnet_parameters(in_channels: int, out_channels: int, branch: int = 256, kernel: int = 3) -> int:
    """Three branches of a bias-free 1x1 conv and BN (weight, bias), then the fusing conv with bias."""
    return 3 * (in_channels * branch + 2 * branch) + (3 * branch * out_channels * kernel * kernel + out_channels)


@pytest.mark.parametrize(("in_channels", "out_channels", "strides"), [(256, 256, STRIDES), (1024, 1024, [16])],
                         ids=["fpn", "c4"])
def test_subnet_shape_and_parameters(in_channels, out_channels, strides):
    m = subnet(in_channels, out_channels, strides)
    assert m.num_inputs == len(strides) and m.out_channels == out_channels and m.featmap_strides == strides
    assert [[layer.output_size for layer in branch] for branch in m.roi_layers] == [[(b, b)] * len(strides)
                                                                                   for b in (14, 28, 56)]
    assert trainable(m) == subnet_parameters(in_channels, out_channels)
    feats = fpn_features(in_channels, strides=strides)
    with torch.no_grad():
        assert m(feats, ROIS).shape == (len(ROIS), out_channels, 14, 14)
        assert m(feats, ROIS[:0]).shape == (0, out_channels, 14, 14)


def test_subnet_parameter_counts_at_the_papers_widths():
    assert subnet_parameters(256, 256) == 1_967_872
    assert subnet_parameters(1024, 1024) == 7_866_880


def test_subnet_options():
    m = subnet(branch_sizes=(7, 14), branch_channels=4, output_size=7, fuse_kernel=1)
    assert trainable(m) == 2 * (8 * 4 + 2 * 4) + (2 * 4 * 8 + 8)
    assert m(fpn_features(8), ROIS).shape == (len(ROIS), 8, 7, 7)
    with pytest.raises(ValueError, match="multiple"):
        subnet(branch_sizes=(14, 20))


def test_every_subnet_parameter_learns():
    m = subnet(finest_scale=FINEST)
    m.train()
    feats = [f.requires_grad_() for f in fpn_features(8)]
    out = m(feats, ROIS)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(f.grad is not None for f in feats)


def test_subnet_pools_each_roi_from_its_level():
    """Zeroing one level changes exactly the RoIs mapped to it; the mapping is SingleRoIExtractor's."""
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor

    m = subnet(finest_scale=FINEST).eval()
    levels = m.map_roi_levels(ROIS, 4)
    stock = SingleRoIExtractor(roi_layer=BOX_ROI_LAYER, out_channels=8, featmap_strides=STRIDES, finest_scale=FINEST)
    assert torch.equal(levels, stock.map_roi_levels(ROIS, 4))
    assert levels.tolist() == [0, 1, 2, 3, 0]
    feats = fpn_features(8)
    with torch.no_grad():
        out = m(feats, ROIS)
        for lvl in range(4):
            zeroed = [torch.zeros_like(f) if i == lvl else f for i, f in enumerate(feats)]
            changed = (m(zeroed, ROIS) != out).flatten(1).any(1)
            assert torch.equal(changed, levels == lvl), lvl
        # with one map every RoI comes from it, whatever its size
        assert torch.equal(subnet(strides=[16]).map_roi_levels(ROIS, 1), torch.zeros(len(ROIS), dtype=torch.long))


def test_subnet_fits_the_shipped_mask_rcnn():
    """Built from the stock Mask R-CNN config's mask extractor, it yields what the mask head takes."""
    import mmdet
    from mmdet.registry import MODELS
    from mmengine.config import Config

    import sbrrepro.models  # noqa: F401  (registers the extractors)

    path = Path(mmdet.__file__).parent / ".mim" / "configs" / "mask_rcnn" / "mask-rcnn_r50_fpn_1x_coco.py"
    roi_head = Config.fromfile(path).model.roi_head
    stock = roi_head.mask_roi_extractor
    ours = MODELS.build(dict(type="MultiScaleSubnetRoIExtractor", in_channels=stock.out_channels,
                             out_channels=roi_head.mask_head.in_channels, featmap_strides=stock.featmap_strides))
    feats = fpn_features(stock.out_channels)
    with torch.no_grad():
        assert ours(feats, ROIS).shape == MODELS.build(stock)(feats, ROIS).shape == (len(ROIS), 256, 14, 14)


@pytest.mark.training
def test_mask_rcnn_with_the_subnet_trains_on_cpu(smoke):
    cfg = generated("sbr-cnn/table3", 1, smoke)
    roi_head = cfg["model"]["roi_head"]
    stock = roi_head["mask_roi_extractor"]
    roi_head["mask_roi_extractor"] = dict(type="MultiScaleSubnetRoIExtractor", in_channels=64, out_channels=64,
                                          branch_channels=64, featmap_strides=stock["featmap_strides"],
                                          finest_scale=stock["finest_scale"])
    model = build(cfg)
    ext = model.roi_head.mask_roi_extractor
    assert type(ext).__name__ == "MultiScaleSubnetRoIExtractor"
    assert trainable(ext) == subnet_parameters(64, 64, branch=64)
    losses = train_step(cfg, model)
    assert {"loss_cls", "loss_bbox", "loss_mask"} <= set(losses)
    for name, p in ext.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    predict(cfg, model)
