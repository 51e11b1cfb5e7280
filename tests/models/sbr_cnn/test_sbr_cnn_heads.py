"""SBR-CNN's FCC heads, the kxk non-local block and the Mask IoU branch of R^3-CNN.

Full width (256 channels, 80 classes): trainable parameters against the analytic counts of the
authors' heads, layer by layer, and the layers of the paper's Table 1. Small width (64, the smoke
scale): forward/backward, init, and an R3RoIHead training step and prediction on random FPN features.
"""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest
import torch

from tests.helpers import TABLE3

pytest.importorskip("mmcv._ext")

from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

import sbrrepro.models  # noqa: E402, F401  (registers the plugins)
from sbrrepro.models.sbr_cnn import FCCBBoxHead, FCCMaskIoUHead, NonLocal2dK  # noqa: E402
from sbrrepro.params import trainable


@pytest.fixture(scope="module", autouse=True)
def mmdet_scope():
    register_all_modules()  # MMDetection's default scope, as a Runner sets it


NUM_CLASSES = 80
CODER = dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2])



def bbox_head(width: int = 256, num_classes: int = NUM_CLASSES, agnostic: bool = True, **kw) -> FCCBBoxHead:
    return MODELS.build(dict(type="FCCBBoxHead", in_channels=width, roi_feat_size=7, num_classes=num_classes,
                             reg_class_agnostic=agnostic, bbox_coder=CODER, **kw))


def mask_iou_head(width: int = 256, num_classes: int = NUM_CLASSES, **kw) -> FCCMaskIoUHead:
    return MODELS.build(dict(type="FCCMaskIoUHead", in_channels=width, conv_out_channels=width,
                             num_classes=num_classes, **kw))


def nl_blocks(module: torch.nn.Module) -> list[NonLocal2dK]:
    return [m for m in module.modules() if isinstance(m, NonLocal2dK)]


# ---- the non-local block ------------------------------------------------------------------------
def test_nonlocal_kxk_counts_and_matches_mmcv_at_1x1():
    from mmcv.cnn import NonLocal2d

    assert trainable(NonLocal2dK(256, kernel_size=7)) == 6_423_168
    assert trainable(NonLocal2dK(64, kernel_size=7)) == 401_568
    reference = NonLocal2d(256, reduction=2, use_scale=True)
    ours = NonLocal2dK(256)
    assert trainable(ours) == trainable(reference) == 131_712
    # kernel_size=1 is mmcv's block: same parameter names, same function
    torch.nn.init.normal_(reference.conv_out.conv.weight, std=0.01)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 256, 7, 7)
    torch.testing.assert_close(ours(x), reference(x))


def test_nonlocal_builds_as_a_plugin_and_starts_as_identity():
    """As GRoIE's post-processing module: build_plugin_layer under MMDetection's default scope."""
    from mmcv.cnn import build_plugin_layer

    name, block = build_plugin_layer(dict(type="NonLocal2dK", in_channels=256, kernel_size=7))
    assert isinstance(block, NonLocal2dK) and name == "nonlocal_block"
    assert block.g.conv.kernel_size == (7, 7) and block.g.conv.padding == (3, 3)
    x = torch.randn(3, 256, 7, 7)
    torch.testing.assert_close(block(x), x)  # conv_out is zero: identity
    assert block(torch.zeros(0, 256, 7, 7)).shape == (0, 256, 7, 7)
    assert importlib.import_module("sbrrepro.models.sbr_cnn.non_local").NonLocal2dK is NonLocal2dK


# ---- parameter counts at full width -------------------------------------------------------------
BBOX_VARIANTS = {  # Fig. 4 (b)-(e) and the rectangular post_reduce options: analytic counts
    "7x7": (dict(), 2_273_877),
    "7x7+NLb": (dict(nl_before=True), 8_697_045),
    "7x7+NLb+NLa": (dict(nl_before=True, nl_after=True), 9_098_613),
    "rect": (dict(convs="7x3-3x7", post_reduce=False), 1_557_269),
    "rect+NLb": (dict(convs="7x3-3x7", post_reduce=False, nl_before=True), 7_980_437),
    "rect-post_reduce": (dict(convs="7x3-3x7", post_reduce=True), 2_847_701),
}
MASK_IOU_VARIANTS = {
    "7x7": (dict(), 4_620_816),
    "7x7+NLb": (dict(nl_before=True), 11_043_984),
    "7x7+NLb+NLa": (dict(nl_before=True, nl_after=True), 11_445_552),
}


@pytest.mark.parametrize("variant", BBOX_VARIANTS)
def test_fcc_bbox_head_parameters(variant):
    kw, expected = BBOX_VARIANTS[variant]
    assert trainable(bbox_head(**kw)) == expected


def test_fcc_bbox_head_class_specific_regression():
    # only fc_reg changes: 3136 x (4 x 80) + 320 instead of 3136 x 4 + 4
    assert trainable(bbox_head(agnostic=False)) == 2_273_877 - 12_548 + 1_003_840


def test_l2c_layers_are_table1():
    """SBR-CNN Table 1: conv1 256x7x7x128, conv2 128x7x7x64; conv1a 256x7x3x256, conv1b 256x3x7x128,
    conv2a 128x7x3x128, conv2b 128x3x7x64 (post_reduce), weights + biases."""

    def layers(head):
        return [(tuple(m.conv.weight.shape), trainable(m)) for m in head.l2c if hasattr(m, "conv")]

    assert layers(bbox_head()) == [((128, 256, 7, 7), 1_605_760), ((64, 128, 7, 7), 401_472)]
    assert layers(bbox_head(convs="7x3-3x7", post_reduce=True)) == [
        ((256, 256, 7, 3), 1_376_512), ((128, 256, 3, 7), 688_256),
        ((128, 128, 7, 3), 344_192), ((64, 128, 3, 7), 172_096)]


def test_mask_iou_head_parameters():
    assert trainable(MODELS.build(dict(type="MaskIoUHead"))) == 16_340_304
    for kw, expected in MASK_IOU_VARIANTS.values():
        assert trainable(mask_iou_head(**kw)) == expected


# ---- small width: forward, backward, init -------------------------------------------------------
@pytest.mark.parametrize("variant", BBOX_VARIANTS)
def test_fcc_bbox_head_forward_backward_small(variant):
    kw, _ = BBOX_VARIANTS[variant]
    torch.manual_seed(0)
    head = bbox_head(width=64, num_classes=3, agnostic=False, **kw)
    head.init_weights()
    cls_score, bbox_pred = head(torch.randn(5, 64, 7, 7))
    assert cls_score.shape == (5, 4) and bbox_pred.shape == (5, 12)
    (cls_score.square().sum() + bbox_pred.square().sum()).backward()
    assert all(p.grad is not None for p in head.parameters())
    for block in nl_blocks(head):  # the zero output projection is what learns first
        assert block.conv_out.conv.weight.grad.abs().sum() > 0
    empty_cls, empty_reg = head(torch.zeros(0, 64, 7, 7))
    assert empty_cls.shape == (0, 4) and empty_reg.shape == (0, 12)


@pytest.mark.parametrize("kw", [dict(), dict(convs="7x3-3x7", nl_before=True, nl_after=True)])
def test_fcc_mask_iou_head_forward_backward_small(kw):
    torch.manual_seed(0)
    head = mask_iou_head(width=64, num_classes=3, **kw)
    head.init_weights()
    assert head.fc_mask_iou.in_features == 16 * 7 * 7
    iou = head(torch.randn(4, 64, 14, 14), torch.randn(4, 28, 28))
    assert iou.shape == (4, 3)
    iou.square().sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_nl_zero_init_survives_init_weights():
    """Pitfall 6: the heads' init_cfg must not re-initialise the NL blocks (nor the L2C convs)."""
    torch.manual_seed(0)
    heads = [bbox_head(width=64, nl_before=True, nl_after=True),
             mask_iou_head(width=64, nl_before=True, nl_after=True)]
    for head in heads:
        head.init_weights()
        blocks = nl_blocks(head)
        assert len(blocks) == 2
        for block in blocks:
            assert not block.conv_out.conv.weight.any() and not block.conv_out.conv.bias.any()
            assert 0.005 < block.g.conv.weight.std() < 0.015  # normal(std 0.01)
    assert 0.005 < heads[0].fc_cls.weight.std() < 0.015 and heads[0].fc_reg.weight.std() < 0.002
    assert 0.005 < heads[1].fc_mask_iou.weight.std() < 0.015


# ---- R^3-CNN with a Mask IoU head ---------------------------------------------------------------
MASK_IOU_CONFIGS = {  # Mask IoU head, and the FCC bbox head beside it
    "fcc": (lambda w, n: dict(type="FCCMaskIoUHead", in_channels=w, conv_out_channels=w, num_classes=n),
            dict(convs="7x3-3x7", post_reduce=False, nl_before=True)),  # SBR-CNN's final heads
    "mmdet": (lambda w, n: dict(type="MaskIoUHead", in_channels=w, conv_out_channels=w, fc_out_channels=4 * w,
                                num_classes=n), dict()),
}


def _r3_head(tmp_path, mask_iou: str | None, **fcc):
    """The smoke-scale R^3-CNN RoI head (2 loops, width 64) with FCC bbox heads (options `fcc`)."""
    from mmengine.config import ConfigDict

    from sbrrepro.configs import build_config, smoke_scale
    from sbrrepro.plan import load_plan

    scale = smoke_scale(tmp_path)  # only the model part of the config is used: no data needed
    model = build_config(load_plan(TABLE3).rows[2], scale)["model"]
    roi = copy.deepcopy(model["roi_head"])
    roi["bbox_head"] = [{**h, "type": "FCCBBoxHead", **fcc} for h in roi["bbox_head"]]
    num_classes = roi["bbox_head"][0]["num_classes"]
    if mask_iou:
        roi["mask_iou_head"] = MASK_IOU_CONFIGS[mask_iou][0](scale.width, num_classes)
    rcnn = copy.deepcopy(model["train_cfg"]["rcnn"])
    for loop in rcnn:
        loop["mask_thr_binary"] = 0.5
    head = MODELS.build(ConfigDict({**roi, "train_cfg": rcnn, "test_cfg": model["test_cfg"]["rcnn"]}))
    head.init_weights()
    return head, scale.width, num_classes


def _inputs(width: int, num_classes: int):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    size = 128
    x = tuple(torch.randn(2, width, size // s, size // s) for s in (4, 8, 16, 32, 64))
    samples, proposals = [], []
    for i in range(2):
        boxes = torch.tensor([[10.0, 12.0, 70.0, 80.0], [40.0, 30.0, 120.0, 100.0]]) + 4 * i
        masks = np.zeros((2, size, size), np.uint8)
        for j, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[j, y1 + 5:y2 - 5, x1 + 3:x2 - 8] = 1
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             scale_factor=(1.0, 1.0), pad_shape=(size, size)))
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([0, num_classes - 1]),
                                           masks=BitmapMasks(masks, size, size))
        samples.append(sample)
        jitter = torch.randn(12, 4) * 6  # few RoIs: the CPU is slow and shared
        proposals.append(InstanceData(bboxes=(boxes.repeat(6, 1) + jitter).clamp(0, size - 1),
                                      scores=torch.rand(12)))
    return x, proposals, samples


@pytest.mark.parametrize("mask_iou", MASK_IOU_CONFIGS)
@pytest.mark.training
def test_r3_head_with_mask_iou_trains_and_scores_masks(tmp_path, mask_iou):
    from mmdet.structures.bbox import bbox2roi

    torch.manual_seed(0)
    head, width, num_classes = _r3_head(tmp_path, mask_iou, **MASK_IOU_CONFIGS[mask_iou][1])
    for block in nl_blocks(head):  # init_weights of the whole RoI head keeps the NL zero-init
        assert not block.conv_out.conv.weight.any()
    x, proposals, samples = _inputs(width, num_classes)

    # training: one Mask IoU loss, from the last loop, not weighted by its alpha
    torch.manual_seed(1)
    losses = head.loss(x, copy.deepcopy(proposals), samples)
    assert [k for k in losses if "iou" in k] == ["loss_mask_iou"]
    assert torch.isfinite(losses["loss_mask_iou"]) and {"s0.loss_mask", "s1.loss_mask"} <= set(losses)
    sum(v for k, v in losses.items() if "loss" in k).backward()
    assert head.mask_iou_head.fc_mask_iou.weight.grad.abs().sum() > 0
    head.stage_loss_weights[-1] /= 2  # the same sampling again (same seed), the last alpha halved
    torch.manual_seed(1)
    with torch.no_grad():
        halved = head.loss(x, copy.deepcopy(proposals), samples)
    torch.testing.assert_close(halved["loss_mask_iou"], losses["loss_mask_iou"].detach())
    torch.testing.assert_close(halved["s1.loss_mask"], losses["s1.loss_mask"].detach() / 2)

    # inference: mask_scores = IoU[label] * score; scores are those of the head without Mask IoU
    head.eval()
    with torch.no_grad():
        results = head.predict(x, copy.deepcopy(proposals), samples, rescale=False)
        iou_head, head.mask_iou_head = head.mask_iou_head, None
        plain = head.predict(x, copy.deepcopy(proposals), samples, rescale=False)
        head.mask_iou_head = iou_head
        for res, ref in zip(results, plain):
            assert len(res) > 0 and "mask_scores" not in ref
            torch.testing.assert_close(res.scores, ref.scores)
            torch.testing.assert_close(res.bboxes, ref.bboxes)
            assert torch.equal(res.masks, ref.masks)
            assert res.mask_scores.shape == res.scores.shape
            assert not torch.allclose(res.mask_scores, res.scores)
        # the IoU is that of the last mask loop's prediction for the detected label
        feats = head.mask_roi_extractor[-1](x[:4], bbox2roi([res.bboxes for res in results]))
        feat = None
        for loop in range(head.eval_loops):
            logits, feat = head.mask_head[head.head_of_loop[loop]](feats, feat)
        labels = torch.cat([res.labels for res in results])
        rows = torch.arange(len(labels))
        iou = iou_head(feats, logits[rows, labels])[rows, labels]
        torch.testing.assert_close(torch.cat([res.mask_scores for res in results]),
                                   iou * torch.cat([res.scores for res in results]))
        # tensor mode (complexity tools) also runs the Mask IoU head
        outputs = head.forward(x, copy.deepcopy(proposals), samples)
        assert len(outputs) == 4 and outputs[3].shape == (24,)


def test_fcc_bbox_head_in_standard_roi_head(tmp_path):
    """Drop-in for Shared2FCBBoxHead in Mask R-CNN's StandardRoIHead (class-specific regression)."""
    from mmengine.config import ConfigDict

    from sbrrepro.configs import build_config, smoke_scale
    from sbrrepro.plan import load_plan

    scale = smoke_scale(tmp_path)
    model = build_config(load_plan(TABLE3).rows[0], scale)["model"]
    roi = copy.deepcopy(model["roi_head"])
    assert roi["type"] == "StandardRoIHead" and roi["bbox_head"]["type"] == "Shared2FCBBoxHead"
    roi["bbox_head"]["type"] = "FCCBBoxHead"  # the rest of its config as it is (fc_out_channels ignored)
    torch.manual_seed(0)
    head = MODELS.build(ConfigDict({**roi, "train_cfg": model["train_cfg"]["rcnn"],
                                    "test_cfg": model["test_cfg"]["rcnn"]}))
    head.init_weights()
    num_classes = roi["bbox_head"]["num_classes"]
    x, proposals, samples = _inputs(scale.width, num_classes)
    losses = head.loss(x, copy.deepcopy(proposals), samples)
    assert torch.isfinite(losses["loss_cls"]) and torch.isfinite(losses["loss_bbox"])
    losses["loss_bbox"].backward()
    assert head.bbox_head.l2c[0].conv.weight.grad.abs().sum() > 0
    head.eval()
    with torch.no_grad():
        results = head.predict(x, copy.deepcopy(proposals), samples, rescale=False)
    assert all(len(r) > 0 and len(r.masks) == len(r.scores) for r in results)
