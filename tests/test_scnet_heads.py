"""The SCNet paper's RoI heads (sbrrepro/models/scnet_heads.py) and HTC with its semantic branch, on
small detectors built from MMDetection's shipped SCNet and HTC configs: one training step in which every
trainable parameter gets a gradient (DDP runs with find_unused_parameters=False), then a prediction."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

mmdet = pytest.importorskip("mmdet")

from mmdet.registry import MODELS  # noqa: E402
from mmdet.testing import demo_mm_inputs  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config, ConfigDict  # noqa: E402
from steps import backward  # noqa: E402

import sbrrepro.models  # noqa: E402, F401  (registers the plugins)

CONFIGS = Path(mmdet.__file__).parent / ".mim" / "configs"
WIDTH, FC = 32, 128  # the shrunk 256-channel convs and 1024-wide fcs
CLASSES, SEMANTIC_CLASSES = 3, 5
IMAGE = 128

register_all_modules()


def _shrink(node):
    """The small version of a model config, in place: narrow channels, fcs and class counts."""
    if isinstance(node, list):
        for item in node:
            _shrink(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("in_channels", "out_channels", "feat_channels", "conv_out_channels", "out_conv_channels") \
                and value == 256:
            node[key] = WIDTH
        elif key in ("fc_out_channels", "in_channels") and value == 1024:  # box fcs; FeatureRelayHead's input
            node[key] = FC
        elif key == "num_classes":
            node[key] = {80: CLASSES, 183: SEMANTIC_CLASSES}[value]
        else:
            _shrink(value)


def _model_cfg(name: str) -> dict:
    """A shipped config's model, shrunk to run in a second on a CPU."""
    model = Config.fromfile(str(CONFIGS / name)).to_dict()["model"]
    _shrink(model)
    model["backbone"].update(depth=18, init_cfg=None)
    model["neck"]["in_channels"] = [64, 128, 256, 512]
    train, test = model["train_cfg"], model["test_cfg"]
    train["rpn_proposal"].update(nms_pre=200, max_per_img=100)
    test["rpn"].update(nms_pre=200, max_per_img=100)
    for stage in train["rcnn"]:
        stage["sampler"]["num"] = 64
    return model


def scnet(feat_relay: bool = True, glbctx: bool = True, head: str = "SCNetSwitchRoIHead") -> dict:
    model = _model_cfg("scnet/scnet_r50_fpn_1x_coco.py")
    roi = model["roi_head"]
    roi["type"] = head
    if not feat_relay:
        del roi["feat_relay_head"]
    if not glbctx:
        del roi["glbctx_head"]
    return model


def semantic_cascade(num_stages: int = 3, feat_relay: bool = False, glbctx: bool = False, mask_samples: str = "own",
                     semantic: bool = True) -> dict:
    """Cascade Mask R-CNN + HTC's semantic branch from HTC's config (with SCNet's relay and context heads)."""
    model = _model_cfg("htc/htc_r50_fpn_1x_coco.py")
    roi = model["roi_head"]
    roi.update(type="SemanticCascadeRoIHead", interleaved=False, mask_info_flow=False, mask_samples=mask_samples,
               num_stages=num_stages, stage_loss_weights=roi["stage_loss_weights"][:num_stages])
    roi["bbox_head"] = roi["bbox_head"][:num_stages]
    roi["mask_head"] = roi["mask_head"][:num_stages]
    model["train_cfg"]["rcnn"] = model["train_cfg"]["rcnn"][:num_stages]
    for head in roi["mask_head"]:
        head["with_conv_res"] = False
    parts = scnet()["roi_head"]  # SCNet's own (already shrunk) relay and context heads
    if feat_relay:
        for head in roi["bbox_head"]:
            head.update(type="SCNetBBoxHead", num_shared_fcs=2)
        roi["feat_relay_head"] = parts["feat_relay_head"]
    if glbctx:
        roi["glbctx_head"] = parts["glbctx_head"]
    if not semantic:
        del roi["semantic_head"], roi["semantic_roi_extractor"]
        model["data_preprocessor"]["pad_seg"] = False
    return model


def htc() -> dict:
    model = _model_cfg("htc/htc_r50_fpn_1x_coco.py")
    model["roi_head"]["type"] = "HTCMeanMaskRoIHead"
    return model


def build(model_cfg: dict):
    torch.manual_seed(0)
    return MODELS.build(ConfigDict(copy.deepcopy(model_cfg)))


def data(model, semantic: bool, training: bool) -> dict:
    raw = demo_mm_inputs(batch_size=2, image_shapes=(3, IMAGE, IMAGE), num_classes=CLASSES, with_mask=True,
                         with_semantic=semantic)
    return model.data_preprocessor(raw, training=training)


def train_step(model) -> dict:
    """One training step's losses (all finite); asserts every trainable parameter got a gradient."""
    losses, trainable = backward(model, data(model, model.roi_head.with_semantic, True))
    # an RoI-head layer whose gradient is all zero would be a wiring mistake (coarse FPN levels may get
    # none: no RoI of a 128-pixel image maps to them)
    dead = {n.rsplit(".", 1)[0] for n, p in trainable.items() if n.startswith("roi_head.") and not p.grad.any()}
    assert not dead, f"zero gradient: {sorted(dead)}"
    return losses


def predict(model) -> list:
    model.eval()
    with torch.no_grad():
        results = model(**data(model, False, False), mode="predict")
    assert len(results) == 2
    for r in results:
        inst = r.pred_instances
        assert 0 < len(inst.bboxes) == len(inst.masks) <= 100
        assert tuple(inst.masks.shape[1:]) == (IMAGE, IMAGE)
    return results


def forward_tensor(model) -> None:
    """The tensor mode (MMDetection's FLOP counter and exporters): box scores and masks per image."""
    model.eval()
    with torch.no_grad():
        ((cls_scores, bbox_preds, masks),) = model(**data(model, False, False), mode="tensor")
    assert len(cls_scores) == len(bbox_preds) == len(masks) == 2
    assert all(len(c) == len(m) for c, m in zip(cls_scores, masks))


def stage_losses(losses: dict, num_stages: int) -> set[str]:
    return {f"s{i}.{k}" for i in range(num_stages) for k in ("loss_cls", "loss_bbox", "loss_mask")}


# ---- SCNet


@pytest.mark.parametrize(("feat_relay", "glbctx", "head"), [
    (True, True, "SCNetRoIHead"), (True, True, "SCNetSwitchRoIHead"), (False, True, "SCNetSwitchRoIHead"),
    (True, False, "SCNetSwitchRoIHead"), (False, False, "SCNetSwitchRoIHead")],
    ids=["stock", "fr-gc", "gc", "fr", "neither"])
def test_scnet(feat_relay, glbctx, head):
    model = build(scnet(feat_relay, glbctx, head))
    assert type(model.roi_head).__name__ == head
    assert model.roi_head.with_feat_relay == feat_relay and model.roi_head.with_glbctx == glbctx
    losses = train_step(model)
    box_losses = {f"s{i}.{k}" for i in range(3) for k in ("loss_cls", "loss_bbox")}
    assert {"loss_semantic_seg", "loss_mask"} | box_losses <= set(losses)  # SCNet: one mask head
    assert ("loss_glbctx" in losses) == glbctx
    predict(model)
    forward_tensor(model)


def test_stock_scnet_without_feature_relay_fails_at_test():
    """Why SCNetSwitchRoIHead exists: MMDetection 3.3's SCNetRoIHead trains without a feature relay
    head but calls it unconditionally in predict_mask."""
    model = build(scnet(feat_relay=False, head="SCNetRoIHead"))
    train_step(model)
    with pytest.raises(AttributeError, match="feat_relay_head"):
        predict(model)


def test_switch_head_matches_stock_scnet_at_test():
    """With both components the switch head predicts exactly what the stock head does."""
    stock, switch = build(scnet(head="SCNetRoIHead")).eval(), build(scnet()).eval()
    switch.load_state_dict(stock.state_dict())
    batch = data(stock, False, False)
    with torch.no_grad():
        a, b = (m(**copy.deepcopy(batch), mode="predict") for m in (stock, switch))
    for x, y in zip(a, b):
        torch.testing.assert_close(x.pred_instances.bboxes, y.pred_instances.bboxes)
        torch.testing.assert_close(x.pred_instances.masks, y.pred_instances.masks)


# ---- Cascade Mask R-CNN + semantic branch


def _record_samples(head) -> list:
    """Wraps the head's bbox_loss and mask_loss to record (kind, stage, sampling results) per call."""
    calls = []
    bbox_loss, mask_loss = head.bbox_loss, head.mask_loss

    def on_bbox(stage, x, sampling_results, *args, **kwargs):
        calls.append(("bbox", stage, sampling_results))
        return bbox_loss(stage, x, sampling_results, *args, **kwargs)

    def on_mask(stage, x, sampling_results, *args, **kwargs):
        calls.append(("mask", stage, sampling_results))
        return mask_loss(stage, x, sampling_results, *args, **kwargs)

    head.bbox_loss, head.mask_loss = on_bbox, on_mask
    return calls


VARIANTS = {
    "cascade": dict(),
    "cascade-fr": dict(feat_relay=True),
    "cascade-gc": dict(glbctx=True),
    "cascade-naive-sc": dict(mask_samples="last"),
    "cascade-naive-sc-fr-gc": dict(mask_samples="last", feat_relay=True, glbctx=True),
    "mask-rcnn": dict(num_stages=1),
    "mask-rcnn-fr": dict(num_stages=1, feat_relay=True),
    "cascade-no-semantic": dict(semantic=False),
}


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_semantic_cascade(variant):
    kw = VARIANTS[variant]
    n = kw.get("num_stages", 3)
    model = build(semantic_cascade(**kw))
    head = model.roi_head
    assert type(head).__name__ == "SemanticCascadeRoIHead"
    assert head.with_semantic == kw.get("semantic", True)
    assert len(head.bbox_head) == len(head.mask_head) == n
    if kw.get("feat_relay"):
        assert len(head.feat_relay_head) == n
    calls = _record_samples(head)
    losses = train_step(model)
    assert stage_losses(losses, n) <= set(losses)
    assert ("loss_semantic_seg" in losses) == head.with_semantic
    assert ("loss_glbctx" in losses) == bool(kw.get("glbctx"))
    boxes = {stage: res for kind, stage, res in calls if kind == "bbox"}
    masks = {stage: res for kind, stage, res in calls if kind == "mask"}
    assert sorted(boxes) == sorted(masks) == list(range(n))
    # mask head t trains on stage t's samples, or on the last stage's for the naive sample consistency
    owner = (lambda t: n - 1) if kw.get("mask_samples") == "last" else (lambda t: t)
    assert all(masks[t] is boxes[owner(t)] for t in range(n))
    predict(model)
    forward_tensor(model)


ROIS = torch.tensor([[0, 8.0, 8.0, 60.0, 70.0], [0, 30.0, 20.0, 120.0, 90.0]])


def _test_time_mask(head, x, semantic, **kwargs) -> torch.Tensor:
    """The mask probabilities the head's predict_mask hands to its last mask head for ROIS."""
    from mmengine.structures import InstanceData

    seen = {}
    predict_by_feat = head.mask_head[-1].predict_by_feat

    def spy(mask_preds, **kw):
        seen["merged"] = mask_preds[0]
        return predict_by_feat(mask_preds=mask_preds, **kw)

    head.mask_head[-1].predict_by_feat = spy
    meta = dict(img_shape=(IMAGE, IMAGE), ori_shape=(IMAGE, IMAGE), scale_factor=(1.0, 1.0))
    results = InstanceData(bboxes=ROIS[:, 1:], labels=torch.tensor([0, 1]), scores=torch.tensor([0.9, 0.8]))
    head.predict_mask(x, semantic, [meta], [results], **kwargs)
    return seen["merged"]


def test_semantic_cascade_mask_is_the_mean_of_every_head():
    """At test every mask head runs on the final boxes, each with its stage's relay of its own box head's
    shared feature (semantic and context features fused as in training); the mask is their mean."""
    model = build(semantic_cascade(feat_relay=True, glbctx=True)).eval()
    head = model.roi_head
    with torch.no_grad():
        x = model.extract_feat(torch.randn(1, 3, IMAGE, IMAGE))
        _, semantic = head.semantic_head(x)
        _, context = head.glbctx_head(x)
        merged = _test_time_mask(head, x, semantic, glbctx_feat=context)

        def fused(extractor, size):
            pooled = F.adaptive_avg_pool2d(head.semantic_roi_extractor([semantic], ROIS), size)
            return extractor(x[:4], ROIS) + pooled + context[0]

        expected = []
        for t in range(3):
            *_, shared = head.bbox_head[t](fused(head.bbox_roi_extractor[t], 7), return_shared_feat=True)
            feats = fused(head.mask_roi_extractor[t], 14) + head.feat_relay_head[t](shared)
            expected.append(head.mask_head[t](feats, return_feat=False).sigmoid())
    expected = torch.stack(expected)
    assert not torch.allclose(expected[0], expected[-1])
    torch.testing.assert_close(merged, expected.mean(0))


def test_positive_slice_matches_scnet():
    """Positives first in each image's sampled RoIs: the same rows as SCNetRoIHead._slice_pos_feats."""
    from mmdet.models.roi_heads import SCNetRoIHead

    from sbrrepro.models import SemanticCascadeRoIHead

    results = [SimpleNamespace(priors=torch.zeros(n, 4), pos_priors=torch.zeros(p, 4)) for n, p in [(5, 2), (4, 0),
                                                                                                       (6, 3)]]
    feats = torch.arange(15.0)[:, None]
    ours = SemanticCascadeRoIHead._pos_slice(feats, results)
    torch.testing.assert_close(ours, SCNetRoIHead._slice_pos_feats(None, feats, results))
    assert ours.flatten().tolist() == [0, 1, 9, 10, 11]


def _plain_boxes_with_relay(roi: dict) -> None:
    roi["feat_relay_head"] = scnet()["roi_head"]["feat_relay_head"]


REJECTED = {
    "interleaved": (lambda roi: roi.update(interleaved=True), "interleaved=True"),
    "mask-info-flow": (lambda roi: roi.update(mask_info_flow=True), "mask_info_flow=True"),
    "mask-samples": (lambda roi: roi.update(mask_samples="first"), "mask_samples"),
    "conv-res": (lambda roi: roi["mask_head"][1].update(with_conv_res=True), "with_conv_res"),
    "relay-plain-boxes": (_plain_boxes_with_relay, "SCNetBBoxHead"),
}


@pytest.mark.parametrize("case", list(REJECTED), ids=list(REJECTED))
def test_semantic_cascade_rejects(case):
    """What it cannot be: HTC's interleaving or mask information flow, an unknown sampling, a residual
    conv nothing would use, a relay from box heads without a shared feature."""
    change, message = REJECTED[case]
    model = semantic_cascade()
    change(model["roi_head"])
    with pytest.raises(ValueError, match=message):
        build(model)


# ---- HTC with its semantic branch


def test_htc_with_semantic():
    """Full HTC (interleaved, mask information flow, semantic branch) trains with MMDetection's loss and
    predicts with HTCMeanMaskRoIHead's mean of the three stages' masks (each with the semantic features,
    as MMDetection's training branch computes them)."""
    from mmdet.models.roi_heads import HybridTaskCascadeRoIHead

    model = build(htc())
    head = model.roi_head
    assert model.with_semantic and head.interleaved and head.mask_info_flow
    losses = train_step(model)
    assert {"loss_semantic_seg"} | stage_losses(losses, 3) <= set(losses)
    predict(model)
    forward_tensor(model)
    with torch.no_grad():
        x = model.extract_feat(torch.randn(1, 3, IMAGE, IMAGE))
        _, semantic = head.semantic_head(x)
        merged = _test_time_mask(head, x, semantic)
        stages = torch.stack([HybridTaskCascadeRoIHead._mask_forward(head, s, x, ROIS, semantic)["mask_preds"].sigmoid()
                              for s in range(3)])
    assert not torch.allclose(stages[0], stages[-1])
    torch.testing.assert_close(merged, stages.mean(0))
