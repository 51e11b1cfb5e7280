"""SCNet (Vu, Kang and Yoo, AAAI 2021) and the models of its ablations: SCNet with feature relay and
global context each switchable; Cascade Mask R-CNN with HTC's semantic branch (the paper's baseline),
with feature relay, global context or naive sample consistency; Mask R-CNN with or without the semantic
branch, with or without feature relay. Every one starts from MMDetection's shipped HTC (with or without
its semantic branch) or SCNet config, on the backbones of MMDetection's SCNet configs.
"""

from __future__ import annotations

from ..schema import Field, one_of
from . import Model
from ._frameworks import ALL as ERA_ALL
from ._parts import (
    BACKBONE,
    BACKBONE_NAMES,
    HTC,
    HTC_SEMANTIC,
    SEMANTIC_HEADS,
    Options,
    backbone,
    backbone_name,
    hours_per_epoch,
    narrow_backbone,
    narrow_relay,
    one_rcnn_stage,
    record_rcnn,
    stock,
    three_stages,
)

SCNET = "scnet/scnet_r50_fpn_1x_coco.py"
FEAT_RELAY = {"feat_relay": Field(bool, False, None, "feature relay: the box head's shared features of each "
                                  "positive RoI, mapped to 14x14, added to its mask features")}
GLBCTX = {"glbctx": Field(bool, False, None, "the global context branch: a multi-label image classifier on the "
                          "top FPN level whose feature is added to every RoI feature of its image")}


def _relay() -> dict:
    """SCNet's feature relay, as its shipped config has it."""
    return stock(SCNET)["model"]["roi_head"]["feat_relay_head"]


def _glbctx(loss_weight: float) -> dict:
    return {**stock(SCNET)["model"]["roi_head"]["glbctx_head"], "loss_weight": loss_weight}


def _scnet(o: Options) -> dict:
    """SCNet as shipped; without feature relay or global context, a RoI head that runs without
    them (MMDetection 3.3's calls the relay at test time whether it has one or not)."""
    cfg = stock(SCNET)
    model = cfg["model"]
    backbone(model, o)
    record_rcnn(model)
    head = model["roi_head"]
    head["glbctx_head"]["loss_weight"] = o["glbctx_weight"]
    if o["semantic_head"] == "htc":  # HTC's plain 4 convs, as the cascade rows' (the same parameters)
        head["semantic_head"] = stock(HTC_SEMANTIC)["model"]["roi_head"]["semantic_head"]
    if not (o["feat_relay"] and o["glbctx"]):
        head["type"] = "SCNetSwitchRoIHead"
        for part in ("feat_relay", "glbctx"):
            if not o[part]:
                del head[f"{part}_head"]
    return cfg


def _finish_scnet(o: Options) -> Options | str:
    if not o["glbctx"] and o["glbctx_weight"] != 3.0:
        return "glbctx_weight needs glbctx: true"
    return o


def _semantic_cascade(o: Options, stages: int = 3) -> dict:
    """HTC's detector without its two information flows (interleaved box and mask branches, mask
    information flow): a cascade whose mask head t trains on stage t's samples, with HTC's semantic
    branch fused into the box and mask RoI features; at test every mask head predicts on the final
    boxes and the masks are averaged. One stage: Mask R-CNN with the semantic branch (`semantic`
    false: without it, from HTC's config without the branch)."""
    cfg = stock(HTC_SEMANTIC if o.get("semantic", True) else HTC)
    model = cfg["model"]
    backbone(model, o)
    head = model["roi_head"]
    head.update(type="SemanticCascadeRoIHead", interleaved=False, mask_info_flow=False)
    for mask_head in head["mask_head"]:
        mask_head["with_conv_res"] = False  # without information flow, an unused layer
    if stages == 1:
        head.update(num_stages=1, stage_loss_weights=[1], bbox_head=head["bbox_head"][:1],
                    mask_head=head["mask_head"][:1])
        head["bbox_head"][0]["reg_class_agnostic"] = False  # Mask R-CNN's class-specific box regression
        model["train_cfg"]["rcnn"] = model["train_cfg"]["rcnn"][:1]
    if o["feat_relay"]:
        head["feat_relay_head"] = _relay()
        for box_head in head["bbox_head"]:  # the same box head (two shared fcs) that also gives its shared features
            box_head.update(type="SCNetBBoxHead", num_shared_fcs=2)
    if o.get("glbctx"):
        head["glbctx_head"] = _glbctx(3.0)
    if o.get("sc") == "naive":
        head["mask_samples"] = "last"
    record_rcnn(model)
    return cfg


# Every model here: on the backbone option, with a semantic branch and, where asked, feature relay.
_HOOKS = dict(backbone=backbone_name, backbones=BACKBONE_NAMES, smoke=(narrow_backbone, narrow_relay),
              semantic_heads=SEMANTIC_HEADS)

MODELS = [
    Model("scnet", "SCNet", "SCNet (sample consistency: one mask head on the last stage's samples), with feature "
          "relay and global context each switchable", _scnet,
          options={**BACKBONE, **{k: Field(bool, True, None, f.help) for k, f in {**FEAT_RELAY, **GLBCTX}.items()},
                   "glbctx_weight": Field(float, 3.0, lambda v: None if v >= 0 else f"must be >= 0, got {v}",
                                          "the global context loss weight (lambda)"),
                   "semantic_head": Field(str, "scnet", one_of("scnet", "htc"),
                                          "SCNet's semantic head (its 4 convs as 2 residual blocks, the authors' "
                                          "code) or HTC's plain one (the cascade rows'), to size the swap")},
          finish=_finish_scnet, gpu_hours_per_epoch=lambda o: hours_per_epoch(3), iou_series=three_stages,
          **_HOOKS),
    Model("cascade_semantic", "Cascade Mask R-CNN", "Cascade Mask R-CNN with HTC's semantic branch (SCNet's "
          "baseline); with feature relay per stage, global context or naive sample consistency",
          _semantic_cascade,
          options={**BACKBONE, **FEAT_RELAY, **GLBCTX,
                   "sc": Field(str, "none", one_of("none", "naive"), "naive sample consistency: every stage's mask "
                               "head trains on the last stage's samples")},
          gpu_hours_per_epoch=lambda o: hours_per_epoch(3), iou_series=three_stages, **_HOOKS),
    Model("mask_rcnn_semantic", "Mask R-CNN", "Mask R-CNN (one-stage HTC without information flow) with HTC's "
          "semantic branch, or without it; with feature relay",
          lambda o: _semantic_cascade(o, stages=1),
          options={**BACKBONE, **FEAT_RELAY,
                   "semantic": Field(bool, True, None, "HTC's semantic branch (false: HTC's config without it)")},
          # Table 4 compares it, with feature relay, to the stock Mask R-CNN built with 1.x's settings:
          # it takes them too (HTC's config already has the losses, proposals and border), so that the
          # two rows differ in the relay, not in their era.
          gpu_hours_per_epoch=lambda o: hours_per_epoch(0), iou_series=one_rcnn_stage, era_settings=ERA_ALL,
          **_HOOKS),
]
