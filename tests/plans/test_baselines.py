"""The paper's baselines (SBR-CNN Tables 8-11) as sbrrepro generates them from MMDetection 3.3's
shipped configs: each builds with the expected parts, takes a training step and predicts on the CPU
at smoke scale (synthetic data, ResNet-18 or a narrow ResNet-50, 64-channel neck and heads). What had
to change for the CPU is asserted here too: SyncBN (GC-Net) cannot run under a gloo process group,
ResNet-18's BasicBlock takes neither DCN nor plugins, and mmcv's deformable convolutions have a
correct CPU backward."""

from __future__ import annotations

import pytest
import torch

from sbrrepro.configs import full_scale
from tests.helpers import build, generated, merged_test_mask, predict, train_step

pytest.importorskip("mmcv._ext")



def modules_of(model, cls) -> list:
    return [m for m in model.modules() if isinstance(m, cls)]


# ---- the baselines ---------------------------------------------------------------------------------
@pytest.mark.training
def test_faster_rcnn_r50_fpn_1x(smoke):
    """GRoIE tables' baseline (Tables 8-10): MMDetection's model as shipped."""
    cfg = generated("sbr-cnn/table8", 1, smoke)
    model = build(cfg)
    assert type(model).__name__ == "FasterRCNN"
    assert type(model.roi_head).__name__ == "StandardRoIHead"
    assert type(model.roi_head.bbox_roi_extractor).__name__ == "SingleRoIExtractor"
    assert type(model.roi_head.bbox_head).__name__ == "Shared2FCBBoxHead"
    losses = train_step(cfg, model)
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"} <= set(losses)
    predict(cfg, model)


@pytest.mark.parametrize("row", [3, 6, 9], ids=["plain", "gcnet", "dcn"])
@pytest.mark.training
def test_htc_without_semantic(smoke, row):
    """HTC (Table 11 row 3), and HTC+GC-Net / HTC+DCN (rows 6 and 9), which MMDetection 3.3 does not
    ship: the HTC config with the backbone keys of the GC-Net / DCN Mask R-CNN configs."""
    cfg = generated("sbr-cnn/table11", row, smoke)
    model = build(cfg)
    assert type(model).__name__ == "HybridTaskCascade"
    assert type(model.roi_head).__name__ == "HTCMeanMaskRoIHead"
    assert not model.with_semantic
    assert [type(h).__name__ for h in model.roi_head.mask_head] == ["HTCMaskHead"] * 3
    losses = train_step(cfg, model)
    assert {f"s{i}.loss_mask" for i in range(3)} <= set(losses)
    predict(cfg, model)


def _test_time_mask(model, image) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask probabilities an HTC's predict_mask hands to the last mask head, for one RoI; and the
    sigmoid of each stage's logits as MMDetection's training branch computes them (with the mask
    information flow where the config has it)."""
    from mmdet.models.roi_heads import HybridTaskCascadeRoIHead

    head = model.roi_head
    rois = torch.tensor([[0, 8.0, 8.0, 60.0, 70.0]])
    with torch.no_grad():
        x = model.extract_feat(image)
        merged = merged_test_mask(head, x, None, rois, image_shape=image.shape[-2:])
        stages = [HybridTaskCascadeRoIHead._mask_forward(head, s, x, rois)["mask_preds"].sigmoid()
                  for s in range(head.num_stages)]
    return merged, torch.stack(stages)


@pytest.mark.parametrize("info_flow", [True, False], ids=["mask-info-flow", "no-info-flow"])
def test_htc_masks_are_the_mean_of_every_stage(smoke, info_flow):
    """At test time HTC's mask is the mean of the three stages' sigmoid masks (the HTC paper,
    MMDetection 2.x, the authors' HTC), with or without mask information flow. MMDetection 3.3's own
    head keeps the last stage's only (its list append sits after the stage loop) and, without the
    information flow, hands each head's (logits, features) pair on as logits."""
    from mmdet.models.roi_heads import HybridTaskCascadeRoIHead

    cfg = generated("sbr-cnn/table11", 3, smoke)
    cfg["model"]["roi_head"]["mask_info_flow"] = info_flow
    if not info_flow:
        for stage in cfg["model"]["roi_head"]["mask_head"]:
            stage["with_conv_res"] = False
    model = build(cfg).eval()
    image = torch.randn(1, 3, smoke.images, smoke.images)
    merged, stages = _test_time_mask(model, image)
    assert not torch.allclose(stages[-1], stages.mean(0))  # the stages' masks differ
    torch.testing.assert_close(merged, stages.mean(0))
    with torch.no_grad():
        stock = HybridTaskCascadeRoIHead._mask_forward(model.roi_head, -1, model.extract_feat(image),
                                                       torch.tensor([[0, 8.0, 8.0, 60.0, 70.0]]), training=False)
    assert len(stock["mask_preds"]) == 1  # why the plugin exists


@pytest.mark.training
def test_cascade_mask_rcnn_as_a_plan_row(smoke, tmp_path):
    """A stock baseline named by a plan row: MMDetection's Cascade Mask R-CNN as shipped, with its
    three stages' training RoIs recorded."""
    from sbrrepro.configs import build_config
    from sbrrepro.plan import load_plan
    from tests.helpers import copy_plan

    (row,) = load_plan(copy_plan(tmp_path, "sbr-cnn/table3", rows=[1], **{"rows.0.model": "cascade_mask_rcnn"})).rows
    cfg = build_config(row, smoke)
    assert [s["sampler"]["series"] for s in cfg["model"]["train_cfg"]["rcnn"]] == ["stage1", "stage2", "stage3"]
    model = build(cfg)
    assert type(model).__name__ == "CascadeRCNN"
    assert [type(h).__name__ for h in model.roi_head.mask_head] == ["FCNMaskHead"] * 3
    losses = train_step(cfg, model)
    assert {f"s{i}.loss_mask" for i in range(3)} <= set(losses)
    predict(cfg, model)


@pytest.mark.training
def test_condinst(smoke):
    """CondInst (Table 11 row 2). MMDetection ships only a multi-scale 90k-iteration config; its
    model gets the same epoch-based, single-scale recipe as the other rows."""
    cfg = generated("sbr-cnn/table11", 2, smoke)
    assert cfg["train_cfg"]["type"] == "EpochBasedTrainLoop"
    assert cfg["train_dataloader"]["sampler"]["type"] == "DefaultSampler"
    assert "RandomChoiceResize" not in str(cfg["train_dataloader"]["dataset"]["pipeline"])
    model = build(cfg)
    assert type(model).__name__ == "CondInst"
    assert type(model.bbox_head).__name__ == "CondInstBboxHead"
    assert type(model.mask_head).__name__ == "CondInstMaskHead"
    losses = train_step(cfg, model)
    assert {"loss_cls", "loss_bbox", "loss_centerness", "loss_mask"} <= set(losses)
    predict(cfg, model)


@pytest.mark.training
def test_gcnet_mask_rcnn(smoke, tmp_path):
    """GC-Net (Table 11 row 5): Mask R-CNN with ContextBlock (ratio 1/4) after conv3 of stages c3-c5.
    At the paper's scale the authors' linked config: plain BN with frozen statistics; HTC+GC-Net and
    SBR-CNN+GC-Net (rows 6, 7) train SyncBN, as their authors' configs do. BN at smoke scale."""
    from mmcv.cnn import ContextBlock

    full = {row: generated("sbr-cnn/table11", row, full_scale(tmp_path))["model"]["backbone"] for row in (5, 6, 7)}
    assert (full[5]["norm_cfg"]["type"], full[5]["norm_eval"]) == ("BN", True)
    assert all((full[r]["norm_cfg"]["type"], full[r]["norm_eval"]) == ("SyncBN", False) for r in (6, 7))
    assert all(len(full[r]["plugins"]) == 1 for r in (5, 6, 7))
    cfg = generated("sbr-cnn/table11", 5, smoke)
    model = build(cfg)
    assert type(model).__name__ == "MaskRCNN"
    assert type(model.roi_head).__name__ == "StandardRoIHead"
    backbone = model.backbone
    assert not modules_of(backbone.layer1, ContextBlock)
    for layer in (backbone.layer2, backbone.layer3, backbone.layer4):
        assert len(modules_of(layer, ContextBlock)) == len(layer)  # one per block
    assert not modules_of(model, torch.nn.SyncBatchNorm)
    losses = train_step(cfg, model)
    assert {"loss_cls", "loss_bbox", "loss_mask"} <= set(losses)
    predict(cfg, model)


def test_syncbn_cannot_train_under_gloo(smoke, tmp_path):
    """The trap: without a process group SyncBN silently acts as BN (and MMEngine's runner reverts it
    when not distributed), but in a gloo group -- the project's multi-process CPU jobs -- torch's
    SyncBatchNorm refuses CPU tensors. BN works there."""
    import torch.distributed as dist

    def backbone(norm: str):
        cfg = generated("sbr-cnn/table11", 5, smoke)
        cfg["model"]["backbone"]["norm_cfg"] = dict(type=norm, requires_grad=True)
        net = build(cfg).backbone
        net.train()  # ResNet.train returns None
        return net

    x = torch.randn(2, 3, 64, 64)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
            backbone("SyncBN")(x)
        assert backbone("BN")(x)[-1].shape[1] == 512
    finally:
        dist.destroy_process_group()


def test_basic_block_takes_no_dcn_or_plugins():
    """Why DCN and GC-Net need a Bottleneck ResNet even at the smallest size."""
    from mmdet.models.backbones import ResNet

    with pytest.raises(AssertionError, match="Not implemented"):
        ResNet(depth=18, dcn=dict(type="DCN", deform_groups=1, fallback_on_stride=False),
               stage_with_dcn=(False, True, True, True))
    with pytest.raises(AssertionError, match="Not implemented"):
        ResNet(depth=18, plugins=[dict(cfg=dict(type="ContextBlock", ratio=1 / 4), stages=(False, True, True, True),
                                       position="after_conv3")])


def test_deformable_convolutions_run_on_cpu():
    """mmcv 2.1's DeformConv2d and ModulatedDeformConv2d: forward and backward on the CPU, the
    backward checked against finite differences; zero offsets give a plain convolution."""
    from mmcv.ops import DeformConv2dPack, deform_conv2d, modulated_deform_conv2d

    torch.manual_seed(0)
    f64 = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(1, 2, 5, 5, **f64)
    w = torch.randn(2, 2, 3, 3, **f64)
    offset = (0.5 * torch.randn(1, 18, 5, 5, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(1, 9, 5, 5, **f64)
    bias = torch.randn(2, **f64)
    # args: stride, padding, dilation, groups, deform_groups
    assert torch.autograd.gradcheck(lambda x, o, w: deform_conv2d(x, o, w, 1, 1, 1, 1, 1), (x, offset, w),
                                    eps=1e-6, atol=1e-4)
    assert torch.autograd.gradcheck(lambda x, o, m, w, b: modulated_deform_conv2d(x, o, m, w, b, 1, 1, 1, 1, 1),
                                    (x, offset, mask, w, bias), eps=1e-6, atol=1e-4)
    conv = DeformConv2dPack(4, 4, 3, padding=1, bias=False)  # its offset conv starts at zero
    y = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(conv(y), torch.nn.functional.conv2d(y, conv.weight, padding=1))


@pytest.mark.training
def test_dcn_mask_rcnn(smoke):
    """DCN (Table 11 row 8): Mask R-CNN with DeformConv2dPack ('DCN', v1) as conv2 of stages c3-c5."""
    from mmcv.ops import DeformConv2dPack

    cfg = generated("sbr-cnn/table11", 8, smoke)
    # from scratch, ResNet zero-initialises each block's last BN (zero_init_residual), which keeps the
    # deformable conv2 from getting a gradient at the first step; with pretrained weights it does
    cfg["model"]["backbone"]["zero_init_residual"] = False
    model = build(cfg)
    assert type(model).__name__ == "MaskRCNN"
    backbone = model.backbone
    # From scratch (no Pretrained init_cfg) ResNet's Kaiming init also hits the offset convs, so the
    # deformable convs do not start as plain convs; with pretrained weights they keep their zero init.
    assert backbone.layer3[0].conv2.conv_offset.weight.any()
    assert not modules_of(backbone.layer1, DeformConv2dPack)
    for layer in (backbone.layer2, backbone.layer3, backbone.layer4):
        assert all(isinstance(block.conv2, DeformConv2dPack) for block in layer)
    losses = train_step(cfg, model)
    assert {"loss_cls", "loss_bbox", "loss_mask"} <= set(losses)
    assert backbone.layer3[0].conv2.conv_offset.weight.grad.abs().sum() > 0, "the offsets did not learn"
    predict(cfg, model)
