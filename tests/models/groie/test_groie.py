"""GRoIE (SBR-CNN section 3.3, Tables 8-10): every module of the ablations at the paper's 256
channels, the parameter counts of the improved and the original (ICPR) GRoIE, plugin chains, and a
Faster R-CNN with GRoIE as its bbox RoI extractor training on the CPU."""

from __future__ import annotations

import pytest
import torch

from sbrrepro.params import trainable
from tests.helpers import build, generated, predict, train_step

pytest.importorskip("mmcv._ext")

TABLE_MODULES = ["conv3x3", "conv5x5", "conv7x7", "conv7x3-3x7", "nonlocal1x1", "nonlocal7x7"]
STRIDES = [4, 8, 16, 32]


def _modules(name: str, channels: int) -> list[dict]:
    import sbrrepro.models  # noqa: F401  (registers NonLocal2dK)
    from sbrrepro.zoo._parts import GROIE_MODULES

    return GROIE_MODULES[name](channels)


def extractor(pre=None, post=None, channels: int = 256, size: int = 7):
    from sbrrepro.models.groie import GRoIE

    torch.manual_seed(0)
    return GRoIE(roi_layer=dict(type="RoIAlign", output_size=size, sampling_ratio=2), out_channels=channels,
                 featmap_strides=STRIDES, pre_cfg=pre, post_cfg=post)


def fpn(channels: int = 256, image: int = 64) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Random features of 2 images at strides 4..32 and 3 RoIs (batch index, x1, y1, x2, y2)."""
    torch.manual_seed(1)
    feats = [torch.randn(2, channels, image // s, image // s) for s in STRIDES]
    rois = torch.tensor([[0, 2.0, 3.0, 40.0, 50.0], [1, 10.0, 0.0, 63.0, 30.0], [0, 20.0, 20.0, 28.0, 27.0]])
    return feats, rois



@pytest.mark.parametrize("where", ["pre", "post"])
@pytest.mark.parametrize("name", TABLE_MODULES)
def test_table_8_9_modules_keep_the_roi_shape(name, where):
    m = extractor(**{where: _modules(name, 256)})
    assert getattr(m, f"with_{where}") and not getattr(m, f"with_{'post' if where == 'pre' else 'pre'}")
    feats, rois = fpn()
    out = m(feats, rois)
    assert out.shape == (3, 256, 7, 7)
    assert torch.isfinite(out).all()


def test_rectangular_chain_keeps_mask_size():
    """The mask extractor pools 14x14: 7x3 -> 3x7 with paddings (3,1), (1,3) keeps it."""
    out = extractor(pre=_modules("conv7x3-3x7", 256), size=14)(*fpn())
    assert out.shape == (3, 256, 14, 14)


def test_improved_groie_parameters():
    """SBR-CNN's GRoIE (Table 10): pre conv 7x7, post non-local with 7x7 kernels."""
    m = extractor(pre=_modules("conv7x7", 256), post=_modules("nonlocal7x7", 256))
    assert trainable(m) == 9_634_688
    assert type(m.post_module).__name__ == "NonLocal2dK"
    assert m.post_module.g.conv.kernel_size == (7, 7)


def test_original_icpr_groie_parameters():
    """The ICPR GRoIE: pre conv 5x5, post GeneralizedAttention '0100' with 6 heads."""
    m = extractor(pre=_modules("conv5x5", 256), post=_modules("attention", 256))
    assert trainable(m) == 1_896_961
    assert m.post_module.attention_type == [False, True, False, False]


def test_list_pre_cfg_applies_its_layers_in_order():
    from mmcv.cnn import ConvModule

    m = extractor(pre=_modules("conv7x3-3x7", 256), post=_modules("nonlocal1x1", 256))
    first, second = m.pre_module
    assert isinstance(first, ConvModule) and first.conv.kernel_size == (7, 3) and first.conv.padding == (3, 1)
    assert isinstance(second, ConvModule) and second.conv.kernel_size == (3, 7) and second.conv.padding == (1, 3)
    assert trainable(m.pre_module) == 2 * (256 * 256 * 21 + 256)
    feats, rois = fpn()
    with torch.no_grad():
        # shared weights: the same chain on every level's pooled map, then the sum, then post
        summed = sum(second(first(layer(f, rois))) for layer, f in zip(m.roi_layers, feats))
        torch.testing.assert_close(m(feats, rois), m.post_module(summed))
        swapped = sum(first(second(layer(f, rois))) for layer, f in zip(m.roi_layers, feats))
        assert not torch.allclose(swapped, summed)


def test_no_pre_or_post_is_the_sum_of_the_levels():
    feats, rois = fpn()
    for empty in (None, []):
        m = extractor(pre=empty, post=empty)
        assert not m.with_pre and not m.with_post
        expected = sum(layer(f, rois) for layer, f in zip(m.roi_layers, feats))
        torch.testing.assert_close(m(feats, rois), expected)
    assert extractor()(feats, rois[:0]).shape == (0, 256, 7, 7)


def test_single_plugins_load_mmdetection_groie_weights():
    """One dict (or a one-item list) is the plugin itself: the parameter names are those of
    MMDetection's GenericRoIExtractor, so its GRoIE checkpoints load strictly."""
    from mmdet.models.roi_heads.roi_extractors import GenericRoIExtractor

    pre, post = _modules("conv5x5", 32)[0], _modules("attention", 32)[0]
    theirs = GenericRoIExtractor(roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=2), out_channels=32,
                                 featmap_strides=STRIDES, pre_cfg=pre, post_cfg=post)
    for ours in (extractor(pre=pre, post=post, channels=32), extractor(pre=[pre], post=[post], channels=32)):
        ours.load_state_dict(theirs.state_dict(), strict=True)
        feats, rois = fpn(channels=32)
        with torch.no_grad():
            torch.testing.assert_close(ours(feats, rois), theirs(feats, rois))


def test_config_round_trip_and_unknown_plugins():
    """Chains survive the config file sbrrepro writes and build by type name; an empty chain is no
    module; an unknown plugin type fails by name."""
    from mmdet.registry import MODELS
    from mmengine.config import Config

    from sbrrepro.config_files import config_text

    cfg = dict(type="GRoIE", roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=2), out_channels=16,
               featmap_strides=STRIDES, pre_cfg=_modules("conv7x3-3x7", 16), post_cfg=[])
    m = MODELS.build(Config.fromstring(config_text(dict(model=cfg)), ".py").model)
    assert len(m.pre_module) == 2 and not m.with_post
    assert m(*fpn(channels=16)).shape == (3, 16, 7, 7)
    with pytest.raises(KeyError, match="not registered"):
        extractor(post=[dict(type="NoSuchPlugin", in_channels=16)], channels=16)


@pytest.mark.training
def test_faster_rcnn_with_groie_trains_on_cpu(smoke):
    """Table 10's model as generated: Faster R-CNN whose bbox extractor is GRoIE (pre conv 7x7, post
    non-local 7x7)."""
    cfg = generated("sbr-cnn/table10", 2, smoke)
    model = build(cfg)
    assert type(model.roi_head).__name__ == "StandardRoIHead"
    groie = model.roi_head.bbox_roi_extractor
    assert type(groie).__name__ == "GRoIE"
    # the non-local block starts as the identity, after the model's init_weights too
    assert not groie.post_module.conv_out.conv.weight.any()
    losses = train_step(cfg, model)
    assert {"loss_cls", "loss_bbox"} <= set(losses)
    assert groie.pre_module.conv.weight.grad.any(), "the shared pre conv does not learn"
    assert groie.post_module.conv_out.conv.weight.grad.abs().sum() > 0
    predict(cfg, model)


@pytest.mark.training
def test_r3_cnn_with_groie_on_both_extractors(smoke):
    """SBR-CNN's placement: GRoIE as the bbox (7x7) and mask (14x14) extractors of R3RoIHead (a
    CascadeRoIHead), here with 2 loops; a training step and a prediction on the CPU."""
    import dataclasses

    from sbrrepro.configs import build_config
    from sbrrepro.plan import load_plan
    from tests.helpers import TABLE3

    row = load_plan(TABLE3).rows[2]  # 2 loops, one head pair
    row = dataclasses.replace(row, options={**row.options, "groie": True, "groie_pre": "conv7x7",
                                            "groie_post": "nonlocal7x7"})
    cfg = build_config(row, smoke)
    model = build(cfg)
    assert type(model.roi_head).__name__ == "R3RoIHead"
    assert [type(e).__name__ for e in model.roi_head.bbox_roi_extractor] == ["GRoIE"]
    assert [type(e).__name__ for e in model.roi_head.mask_roi_extractor] == ["GRoIE"]
    losses = train_step(cfg, model)
    assert {"s0.loss_cls", "s1.loss_cls", "s0.loss_mask", "s1.loss_mask"} <= set(losses)
    predict(cfg, model)


def test_level_relu_rectifies_each_level_before_the_sum():
    """The GRoIE authors' code: relu(pre(RoIAlign_i)) per level, then the sum (an identity pre when
    there is none): negative features of one level no longer cancel another's."""
    from mmcv.ops import RoIAlign

    from sbrrepro.models.groie import GRoIE

    feats, rois = fpn(channels=16)
    m = GRoIE(roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=2), out_channels=16,
              featmap_strides=STRIDES, level_relu=True)
    expected = sum(RoIAlign(7, 1 / s, 2)(f, rois).relu() for f, s in zip(feats, STRIDES))
    torch.testing.assert_close(m(feats, rois), expected)
    assert m(feats, rois[:0]).shape == (0, 16, 7, 7)


def test_concat_reduces_the_levels_back_to_the_heads_width(tmp_path):
    """concat, as generated: 4 x 256 channels, a 1x1 conv (with ReLU) back to 256 ahead of the post
    module; an image without RoIs gets the reduced width too."""
    import dataclasses

    from sbrrepro.configs import build_config, full_scale
    from sbrrepro.plan import load_plan
    from tests.helpers import TABLE3

    row = load_plan(TABLE3).rows[0]  # Mask R-CNN
    row = dataclasses.replace(row, options={**row.options, "groie": True, "groie_aggregation": "concat",
                                            "groie_post": "conv3x3"})
    cfg = build_config(row, full_scale(tmp_path))["model"]["roi_head"]["bbox_roi_extractor"]
    assert (cfg["aggregation"], cfg["out_channels"]) == ("concat", 256)
    from mmdet.registry import MODELS

    m = MODELS.build(cfg)
    assert m.out_channels == 1024 and m.post_module[0].conv.in_channels == 1024
    feats, rois = fpn()
    assert m(feats, rois).shape == (3, 256, 7, 7)
    assert m(feats, rois[:0]).shape == (0, 256, 7, 7)
    assert trainable(m) == (1024 * 256 + 256) + (256 * 256 * 9 + 256)
