"""The SCNet paper's RoI heads (sbrrepro/models/scnet/) on small detectors built from MMDetection's shipped
SCNet and HTC configs: one training step in which every trainable parameter gets a gradient (DDP runs with
find_unused_parameters=False), then a prediction."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("mmdet")

from tests.helpers import (  # noqa: E402
    IMAGE,
    build,
    data,
    dead_layers,
    forward_tensor,
    merged_test_mask,
    predict,
    shipped_model,
    train_step,
)


def scnet(feat_relay: bool = True, glbctx: bool = True, head: str = "SCNetSwitchRoIHead") -> dict:
    model = shipped_model("scnet/scnet_r50_fpn_1x_coco.py")
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
    model = shipped_model("htc/htc_r50_fpn_1x_coco.py")
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


def step(cfg: dict, model) -> dict:
    """`train_step`, then no RoI-head layer with an all-zero gradient (a wiring mistake)."""
    losses = train_step(cfg, model)
    assert not dead_layers(model), dead_layers(model)
    return losses


def tensor_mode(cfg: dict, model) -> None:
    """The tensor mode (MMDetection's FLOP counter and exporters): box scores and masks per image."""
    ((cls_scores, bbox_preds, masks),) = forward_tensor(cfg, model)
    assert len(cls_scores) == len(bbox_preds) == len(masks) == 2
    assert all(len(c) == len(m) for c, m in zip(cls_scores, masks))


def stage_losses(losses: dict, num_stages: int) -> set[str]:
    return {f"s{i}.{k}" for i in range(num_stages) for k in ("loss_cls", "loss_bbox", "loss_mask")}


# ---- SCNet


@pytest.mark.parametrize(("feat_relay", "glbctx", "head"), [
    (True, True, "SCNetRoIHead"), (True, True, "SCNetSwitchRoIHead"), (False, True, "SCNetSwitchRoIHead"),
    (True, False, "SCNetSwitchRoIHead"), (False, False, "SCNetSwitchRoIHead")],
    ids=["stock", "fr-gc", "gc", "fr", "neither"])
@pytest.mark.training
def test_scnet(feat_relay, glbctx, head):
    cfg = scnet(feat_relay, glbctx, head)
    model = build(cfg)
    assert type(model.roi_head).__name__ == head
    assert model.roi_head.with_feat_relay == feat_relay and model.roi_head.with_glbctx == glbctx
    losses = step(cfg, model)
    box_losses = {f"s{i}.{k}" for i in range(3) for k in ("loss_cls", "loss_bbox")}
    assert {"loss_semantic_seg", "loss_mask"} | box_losses <= set(losses)  # SCNet: one mask head
    assert ("loss_glbctx" in losses) == glbctx
    predict(cfg, model)
    tensor_mode(cfg, model)


@pytest.mark.training
def test_stock_scnet_without_feature_relay_fails_at_test():
    """Why SCNetSwitchRoIHead exists: MMDetection 3.3's SCNetRoIHead trains without a feature relay
    head but calls it unconditionally in predict_mask."""
    cfg = scnet(feat_relay=False, head="SCNetRoIHead")
    model = build(cfg)
    step(cfg, model)
    with pytest.raises(AttributeError, match="feat_relay_head"):
        predict(cfg, model)


@pytest.mark.training
def test_switch_head_matches_stock_scnet_at_test():
    """With both components the switch head predicts exactly what the stock head does."""
    cfg = scnet(head="SCNetRoIHead")
    stock, switch = build(cfg).eval(), build(scnet()).eval()
    switch.load_state_dict(stock.state_dict())
    batch = data(cfg, stock, False)
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
@pytest.mark.training
def test_semantic_cascade(variant):
    kw = VARIANTS[variant]
    n = kw.get("num_stages", 3)
    cfg = semantic_cascade(**kw)
    model = build(cfg)
    head = model.roi_head
    assert type(head).__name__ == "SemanticCascadeRoIHead"
    assert head.with_semantic == kw.get("semantic", True)
    assert len(head.bbox_head) == len(head.mask_head) == n
    if kw.get("feat_relay"):
        assert len(head.feat_relay_head) == n
    calls = _record_samples(head)
    losses = step(cfg, model)
    assert stage_losses(losses, n) <= set(losses)
    assert ("loss_semantic_seg" in losses) == head.with_semantic
    assert ("loss_glbctx" in losses) == bool(kw.get("glbctx"))
    boxes = {stage: res for kind, stage, res in calls if kind == "bbox"}
    masks = {stage: res for kind, stage, res in calls if kind == "mask"}
    assert sorted(boxes) == sorted(masks) == list(range(n))
    # mask head t trains on stage t's samples, or on the last stage's for the naive sample consistency
    owner = (lambda t: n - 1) if kw.get("mask_samples") == "last" else (lambda t: t)
    assert all(masks[t] is boxes[owner(t)] for t in range(n))
    predict(cfg, model)
    tensor_mode(cfg, model)


ROIS = torch.tensor([[0, 8.0, 8.0, 60.0, 70.0], [0, 30.0, 20.0, 120.0, 90.0]])


def test_semantic_cascade_mask_is_the_mean_of_every_head():
    """At test every mask head runs on the final boxes, each with its stage's relay of its own box head's
    shared feature (semantic and context features fused as in training); the mask is their mean."""
    model = build(semantic_cascade(feat_relay=True, glbctx=True)).eval()
    head = model.roi_head
    with torch.no_grad():
        x = model.extract_feat(torch.randn(1, 3, IMAGE, IMAGE))
        _, semantic = head.semantic_head(x)
        _, context = head.glbctx_head(x)
        merged = merged_test_mask(head, x, semantic, ROIS, glbctx_feat=context)

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

    from sbrrepro.models.scnet import SemanticCascadeRoIHead

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
