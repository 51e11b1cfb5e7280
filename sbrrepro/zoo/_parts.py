"""Pieces the zoo's models share: MMDetection's shipped configs, option groups (GRoIE, backbone
add-ons) and the config changes that go with them, IoU recording, and the paper-based cost model.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
from pathlib import Path
from typing import Any

from ..schema import Field, one_of

Options = dict[str, Any]


@functools.cache
def _shipped(path: str) -> dict:
    from mmengine.config import Config

    # Found without importing mmdet, which would pull in torch and mmcv's ops.
    root = Path(importlib.util.find_spec("mmdet").submodule_search_locations[0]) / ".mim" / "configs"
    return Config.fromfile(str(root / path)).to_dict()


def walk(node: Any, fn) -> None:
    """Call fn on every dict inside node (depth first)."""
    if isinstance(node, dict):
        fn(node)
        for v in node.values():
            walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            walk(v, fn)


def config_node(cfg: Any, dotted: str) -> tuple[Any, str | int] | None:
    """The dict or list holding a dotted key of a config, and the last part; None where the key does
    not exist (list items by index: `model.roi_head.bbox_head.0.num_classes`)."""
    node, found = cfg, None
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            found = (node, part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            found = (node, int(part))
        else:
            return None
        node = found[0][found[1]]
    return found


def stock(path: str) -> dict:
    """A config shipped with MMDetection (e.g. 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'), as a dict
    of its own."""
    return copy.deepcopy(_shipped(path))


MASK_RCNN = "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"
HTC = "htc/htc-without-semantic_r50_fpn_1x_coco.py"
HTC_SEMANTIC = "htc/htc_r50_fpn_1x_coco.py"


# ---- FPN backbones -----------------------------------------------------------------------------
# option -> (a shipped config with that backbone, the recipe's name of it)
BACKBONES = {
    "r50-fpn": (MASK_RCNN, "resnet50_fpn"),
    "r101-fpn": ("scnet/scnet_r101_fpn_20e_coco.py", "resnet101_fpn"),
    "x101-64x4d-fpn": ("scnet/scnet_x101-64x4d_fpn_20e_coco.py", "resnext101_64x4d_fpn"),
}
BACKBONE = {"backbone": Field(str, "r50-fpn", one_of(*BACKBONES), "ResNet-50 or -101, or ResNeXt-101 64x4d, with "
                              "FPN (the 64x4d of MMDetection's ResNeXt configs), ImageNet-pretrained")}


def backbone(model: dict, o: Options) -> None:
    """The option's backbone, as MMDetection's shipped configs have it."""
    model["backbone"] = stock(BACKBONES[o["backbone"]][0])["model"]["backbone"]


def backbone_name(o: Options) -> str:
    return BACKBONES[o["backbone"]][1]


BACKBONE_NAMES = tuple(name for _, name in BACKBONES.values())  # what a model with the option may build


# ---- the smoke scale's narrowing of modules beyond MMDetection's standard keys ---------------------
def narrow_backbone(model: dict, width: int) -> None:
    """ResNeXt has no depth 18: a ResNet, the ResNet-18 that every smoke row's backbone is."""
    backbone = model["backbone"]
    if backbone["type"] == "ResNeXt":
        backbone["type"] = "ResNet"
        for key in ("groups", "base_width"):
            backbone.pop(key)


def narrow_relay(model: dict, width: int) -> None:
    """SCNet's feature relay (MMDetection's FeatureRelayHead) reads the box head's shared fc features,
    4 x width wide as the 1024 of the paper's 256 channels, and writes mask features of width."""
    relay = model.get("roi_head", {}).get("feat_relay_head")
    if relay:
        relay.update(in_channels=4 * width, out_conv_channels=width)


# The semantic branches of HTC (FusedSemanticHead) and SCNet: their classes are the semantic maps' own.
SEMANTIC_HEADS = ("FusedSemanticHead", "SCNetSemanticHead")


def three_stages(o: Options) -> dict[str, str]:
    """The IoU series of a three-stage cascade, as figures label them."""
    return {f"stage{k + 1}": f"stage {k + 1} (IoU ≥ {iou:g})" for k, iou in enumerate((0.5, 0.6, 0.7))}


# ---- GPU-hours before anything was measured -----------------------------------------------------
# The SBR-CNN paper's durations on 8 V100s: Mask R-CNN 3x (36 epochs) in about 35 h, R^3-CNN with 3
# loops (12 epochs) in about 25 h; a loop (or a cascade stage) is taken to cost a third of the
# difference. Heavier heads and backbones are not priced until measured.
MASK_RCNN_PER_EPOCH = 35 * 8 / 36
PER_LOOP_EPOCH = (25 * 8 / 12 - MASK_RCNN_PER_EPOCH) / 3


COST_BASIS = ("the SBR-CNN paper's durations on 8 V100s (Mask R-CNN 3x 35 h, 3-loop R^3-CNN 25 h; another "
              "two-stage model as Mask R-CNN, a cascade stage as a loop)")


def hours_per_epoch(loops: int) -> float:
    return MASK_RCNN_PER_EPOCH + PER_LOOP_EPOCH * loops


# ---- IoU recording (figures of the IoU distribution of training RoIs) ---------------------------
def recording(sampler: dict, series: str) -> dict:
    return dict(type="IoURecordingSampler", series=series, sampler=sampler)


def one_rcnn_stage(o: Options) -> dict[str, str]:
    """The IoU series of a single R-CNN stage, as figures label it."""
    return {"rcnn": "R-CNN (IoU ≥ 0.5)"}


def record_rcnn(model: dict) -> None:
    """Record the IoUs of the training RoIs of every R-CNN stage."""
    rcnn = model["train_cfg"]["rcnn"]
    if isinstance(rcnn, dict):
        rcnn["sampler"] = recording(rcnn["sampler"], "rcnn")
    else:
        for i, stage in enumerate(rcnn):
            stage["sampler"] = recording(stage["sampler"], f"stage{i + 1}")


# ---- backbone add-ons (SBR-CNN Table 11) ---------------------------------------------------------
ADDON = {"addon": Field(str, "none", one_of("none", "gcnet", "dcn"),
                        "GC-Net context blocks or DCN in ResNet stages c3-c5"),
         "sync_bn": Field(bool, None, None, "with gcnet: SyncBN trained, or the stock frozen BN (default: as the "
                          "model's GC-Net config that the SBR-CNN authors link)")}


def addon(model: dict, o: Options, sync_bn: bool) -> None:
    """GC-Net (context blocks r4 in stages c3-c5; with SyncBN trained, unless the options or else
    `sync_bn` say the stock backbone's BN with frozen statistics) or DCN in stages c3-c5."""
    backbone = model["backbone"]
    if o.get("addon") == "gcnet":
        backbone["plugins"] = [dict(cfg=dict(type="ContextBlock", ratio=1.0 / 4), stages=(False, True, True, True),
                                    position="after_conv3")]
        if sync_bn if o.get("sync_bn") is None else o["sync_bn"]:
            backbone.update(norm_cfg=dict(type="SyncBN", requires_grad=True), norm_eval=False)
    elif o.get("addon") == "dcn":
        backbone.update(dcn=dict(type="DCN", deform_groups=1, fallback_on_stride=False),
                        stage_with_dcn=(False, True, True, True))


# ---- GRoIE -----------------------------------------------------------------------------------------
def _conv(c: int, kernel: int | tuple[int, int], padding: int | tuple[int, int]) -> dict:
    # inplace=False as in the authors' and MMDetection's GRoIE configs (no effect on the result)
    return dict(type="ConvModule", in_channels=c, out_channels=c, kernel_size=kernel, padding=padding,
                inplace=False)


# The named pre-/post-processing modules of GRoIE at c channels, as plugin configs in order:
# 'convKxK' one ConvModule (+ReLU) keeping the map size; 'conv7x3-3x7' a 7x3 then a 3x7 one, padded
# (3,1) and (1,3); 'nonlocal1x1' mmcv's embedded-Gaussian NonLocal2d; 'nonlocal7x7' SBR-CNN's
# non-local block with 7x7 kernels; 'attention' the ICPR GRoIE's post module, GeneralizedAttention
# '0100' (query content x relative position), 6 heads, key/value stride 2, global range.
GROIE_MODULES = {
    "conv1x1": lambda c: [_conv(c, 1, 0)],
    "conv3x3": lambda c: [_conv(c, 3, 1)],
    "conv5x5": lambda c: [_conv(c, 5, 2)],
    "conv7x7": lambda c: [_conv(c, 7, 3)],
    "conv7x3-3x7": lambda c: [_conv(c, (7, 3), (3, 1)), _conv(c, (3, 7), (1, 3))],
    "nonlocal1x1": lambda c: [dict(type="NonLocal2d", in_channels=c, reduction=2, use_scale=True)],
    "nonlocal7x7": lambda c: [dict(type="NonLocal2dK", in_channels=c, reduction=2, use_scale=True, kernel_size=7)],
    "attention": lambda c: [dict(type="GeneralizedAttention", in_channels=c, spatial_range=-1, num_heads=6,
                                 attention_type="0100", kv_stride=2)],
}
GROIE = {
    "groie": Field(bool, False, None, "GRoIE in place of the RoI extractors"),
    "groie_pre": Field(str, None, one_of(*GROIE_MODULES), "GRoIE pre-processing module"),
    "groie_post": Field(str, None, one_of(*GROIE_MODULES), "GRoIE post-processing module"),
    "groie_aggregation": Field(str, "sum", one_of("sum", "concat"),
                               "sum the levels, or concatenate them and reduce with a 1x1 conv"),
    "level_relu": Field(bool, False, None, "a ReLU on each level's (pre-processed) RoI features before "
                        "aggregating, as the GRoIE authors' code"),
    "random_level": Field(bool, False, None, "single-level extractors pool each RoI from a level drawn at random"),
    "groie_bbox_heads": Field(int, 6, lambda v: None if v > 0 else f"must be > 0, got {v}",
                              "heads of the attention module in the box extractor's GRoIE (the authors' GC-Net "
                              "config has 8 there, 6 in the mask extractor)"),
}


def finish_groie(o: Options) -> Options | str:
    grown = [k for k in ("groie_pre", "groie_post", "level_relu") if o[k]] + (
        ["groie_aggregation"] if o["groie_aggregation"] != "sum" else [])
    if not o["groie"] and grown:
        return f"{grown[0]} needs groie: true"
    if o["groie"] and o["random_level"]:
        return "random_level is for single-level extractors: not with groie: true"
    if o["groie_bbox_heads"] != 6 and "attention" not in (o["groie_pre"], o["groie_post"]):
        return "groie_bbox_heads needs an attention module (groie_pre or groie_post: attention)"
    return o


def groie(extractor: dict, o: Options, heads: int = 6) -> dict:
    """GRoIE in place of a single-level RoI extractor: every FPN level, pre-processed, summed,
    post-processed; its attention modules with `heads` heads. RoIAlign takes 2 points per bin, as in
    every GRoIE config of the authors (the stock extractors' 0 is adaptive: pooled from P2 too, a
    large RoI would get hundreds per bin)."""
    if not o["groie"]:
        return {**extractor, "type": "RandomLevelRoIExtractor"} if o["random_level"] else extractor
    c = extractor["out_channels"]
    optional = {**({"aggregation": "concat"} if o["groie_aggregation"] == "concat" else {}),
                **({"level_relu": True} if o["level_relu"] else {})}
    pre, post = (GROIE_MODULES[name](c) if name else None for name in (o["groie_pre"], o["groie_post"]))
    for module in (pre or []) + (post or []):
        if module["type"] == "GeneralizedAttention":
            module["num_heads"] = heads
    return dict(type="GRoIE", roi_layer={**extractor["roi_layer"], "sampling_ratio": 2}, out_channels=c,
                featmap_strides=extractor["featmap_strides"], pre_cfg=pre, post_cfg=post, **optional)


def two_stage(path: str, o: Options, sync_bn: bool = True) -> dict:
    """A shipped two-stage config with IoU recording and, where the options have them, another
    backbone, a backbone add-on (`sync_bn`: see `addon`) and GRoIE extractors."""
    cfg = stock(path)
    model = cfg["model"]
    record_rcnn(model)
    if "backbone" in o:
        backbone(model, o)
    addon(model, o, sync_bn)
    head = model["roi_head"]
    if "groie" in o:
        for key in ("bbox_roi_extractor", "mask_roi_extractor", "grid_roi_extractor"):
            if key in head:
                head[key] = groie(head[key], o, o["groie_bbox_heads"] if key == "bbox_roi_extractor" else 6)
    return cfg
