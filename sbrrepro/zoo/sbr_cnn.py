"""SBR-CNN (Rossi, Karimi, Prati, JVCIR 2022): R^3-CNN, its FCC heads and Mask IoU branch, SBR-CNN
itself, and what Table 1 (one head layer) and Fig. 1 (the RPN's anchors) count or compute."""

from __future__ import annotations

import copy
import dataclasses
import string
from typing import Any

from ..schema import Field, one_of, positive
from ..vocabulary import L2C
from . import Model
from ._parts import ADDON, GROIE, HTC, MASK_RCNN, Options, addon, finish_groie, groie, hours_per_epoch, recording, stock

MAX_LOOPS = 5
# Defaults per loop, from the authors' configs: IoU thresholds 0.5, 0.6, 0.7, ... and loss weights
# alpha_t 1, 0.75, 0.5, 0.3 (the 4-loop R^3-CNN of SBR-CNN Table 3).
DEFAULT_IOU = (0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_LOSS_WEIGHTS = (1.0, 0.75, 0.5, 0.3, 0.2)


def _in_range(lo: int, hi: int):
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}, got {v}"


def _finish_loops(o: Options) -> Options | str:
    loops, eval_loops = o["loops"], o["eval_loops"] or o["loops"]
    alternation = o["alternation"] or "a" * max(loops, eval_loops)
    letters = sorted(set(alternation))
    if letters != list(string.ascii_lowercase[: len(letters)]) or alternation[0] != "a":
        return f"alternation {alternation!r}: use letters a, b, ... in order of first use, starting with 'a'"
    if len(alternation) < max(loops, eval_loops):
        return (
            f"alternation {alternation!r} has {len(alternation)} letters; it needs one per loop "
            f"(loops={loops}, eval_loops={eval_loops})"
        )
    ious = o["iou_thresholds"] or list(DEFAULT_IOU[:loops])
    weights = o["loss_weights"] or list(DEFAULT_LOSS_WEIGHTS[:loops])
    for name, values in (("iou_thresholds", ious), ("loss_weights", weights)):
        if len(values) != loops:
            return f"{name} has {len(values)} values; it needs one per training loop ({loops})"
    return {**o, "eval_loops": eval_loops, "alternation": alternation, "iou_thresholds": ious,
            "loss_weights": weights}


def _training(o: Options) -> Options:
    """L_e only matters at test time; so does the tail of the alternation past L_t, unless it names
    a pair that training never uses (then the weights differ and nothing is shared)."""
    train_alt = o["alternation"][: o["loops"]]
    alternation = train_alt if set(train_alt) == set(o["alternation"]) else o["alternation"]
    return {**o, "eval_loops": o["loops"], "alternation": alternation}


def _finish(o: Options) -> Options | str:
    for name in ("nl_before", "nl_after"):
        if o[name] and o["l2c"] == "none":
            return f"{name} needs L2C convolutions in the detection head (l2c: 7x7 or 7x3-3x7)"
        if o[f"mask_iou_{name}"] and o["mask_iou"] in ("none", "fc"):
            return f"mask_iou_{name} needs an L2C Mask IoU branch (mask_iou: 7x7 or 7x3-3x7)"
    finished = finish_groie(o)
    return finished if isinstance(finished, str) else _finish_loops(finished)


def _options(defaults: Options) -> dict[str, Field]:
    fields = {
        "loops": Field(int, 3, _in_range(1, MAX_LOOPS), "L_t, the training loops"),
        "eval_loops": Field(int, None, _in_range(1, MAX_LOOPS), "L_e; defaults to loops"),
        "alternation": Field(str, None, None, "which head pair each loop uses, e.g. 'aab'"),
        "iou_thresholds": Field(("list", float), None, positive, "one per training loop"),
        "loss_weights": Field(("list", float), None, positive, "alpha_t, one per training loop"),
        "mask_loop": Field(bool, True, None, "chain the mask head over the previous loops in training"),
        "pair_coders": Field(str, "cascade", one_of("cascade", "first"),
                             "box coders of the pairs: pair k with HTC stage k's stds, or every pair with stage 1's"),
        "l2c": Field(str, "none", one_of("none", *L2C), "FCC: the detection head's FCs become convolutions"),
        "l2c_post_reduce": Field(bool, True, None, "7x3-3x7: the 7x3 conv keeps the channels, the 3x7 halves them"),
        "nl_before": Field(bool, False, None, "NL_b: a 7x7 non-local block before the L2C convolutions"),
        "nl_after": Field(bool, False, None, "NL_a: a 7x7 non-local block after them"),
        "mask_iou": Field(str, "none", one_of("none", "fc", *L2C),
                          "Mask IoU branch: none, the original (fc) or with L2C convolutions"),
        "mask_iou_nl_before": Field(bool, False, None, "NL_b in the Mask IoU branch"),
        "mask_iou_nl_after": Field(bool, False, None, "NL_a in the Mask IoU branch"),
        **GROIE,
        **ADDON,
    }
    return {k: dataclasses.replace(f, default=defaults.get(k, f.default)) for k, f in fields.items()}


# ---- configs --------------------------------------------------------------------------------------
def _fcc(head: dict, l2c: str, post_reduce: bool, nl_before: bool, nl_after: bool) -> dict:
    """A head whose two shared FCs become L2C convolutions (SBR-CNN Sec. 3.2, Fig. 4)."""
    return {**head, "convs": l2c, "post_reduce": post_reduce, "nl_before": nl_before, "nl_after": nl_after}


def _bbox_head(htc_head: dict, o: Options) -> dict:
    head = copy.deepcopy(htc_head)
    if o["l2c"] == "none":
        return head
    for key in ("num_shared_convs", "num_shared_fcs", "num_cls_convs", "num_cls_fcs", "num_reg_convs",
                "num_reg_fcs", "conv_out_channels", "fc_out_channels"):
        head.pop(key, None)
    return _fcc({**head, "type": "FCCBBoxHead"}, o["l2c"], o["l2c_post_reduce"], o["nl_before"], o["nl_after"])


def _mask_iou_head(o: Options) -> dict:
    base = dict(num_convs=4, roi_feat_size=14, in_channels=256, conv_out_channels=256, num_classes=80)
    if o["mask_iou"] == "fc":  # the original branch of Mask Scoring R-CNN
        return dict(type="MaskIoUHead", num_fcs=2, fc_out_channels=1024, **base)
    return _fcc({"type": "FCCMaskIoUHead", **base}, o["mask_iou"], True, o["mask_iou_nl_before"],
                o["mask_iou_nl_after"])


def _r3_cnn(o: Options) -> dict:
    """R^3-CNN on the authors' base (HTC without semantic): H pairs of bbox head and R3MaskHead,
    loop t with IoU threshold u_t and loss weight alpha_t; optionally FCC heads, a Mask IoU branch,
    GRoIE and a GC-Net / DCN backbone."""
    cfg = stock(HTC)
    model = cfg["model"]
    model["type"] = "CascadeRCNN"  # the HTC detector type asks for a semantic branch we do not have
    addon(model, o, sync_bn=True)
    htc = model["roi_head"]
    head_of_loop = [ord(c) - ord("a") for c in o["alternation"]]
    heads = max(head_of_loop) + 1
    template = model["train_cfg"]["rcnn"][0]
    loops = []
    for t, iou in enumerate(o["iou_thresholds"]):
        loop = copy.deepcopy(template)
        loop["assigner"].update(pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou)
        loop["sampler"] = recording(loop["sampler"], f"loop{t + 1}")
        loops.append(loop)
    model["train_cfg"]["rcnn"] = loops
    mask_head = {**htc["mask_head"][0], "type": "R3MaskHead"}
    del mask_head["with_conv_res"]
    model["roi_head"] = dict(
        type="R3RoIHead",
        train_loops=o["loops"],
        eval_loops=o["eval_loops"],
        head_of_loop=head_of_loop,
        loop_loss_weights=o["loss_weights"],
        mask_loop=o["mask_loop"],
        bbox_roi_extractor=groie(htc["bbox_roi_extractor"], o),
        # pair k regresses with HTC's stage-k coder, as the authors' 2-pair configs do but one
        bbox_head=[{**_bbox_head(htc["bbox_head"][k], o),
                    "bbox_coder": htc["bbox_head"][k if o["pair_coders"] == "cascade" else 0]["bbox_coder"]}
                   for k in range(heads)],
        mask_roi_extractor=groie(htc["mask_roi_extractor"], o),
        mask_head=[copy.deepcopy(mask_head) for _ in range(heads)],
    )
    if o["mask_iou"] != "none":
        model["roi_head"]["mask_iou_head"] = _mask_iou_head(o)
        loops[o["loops"] - 1]["mask_thr_binary"] = 0.5  # the Mask IoU targets binarise the last loop's masks
    return cfg


def _loop_series(o: Options) -> dict[str, str]:
    return {f"loop{k + 1}": f"loop {k + 1} (IoU ≥ {iou:g})" for k, iou in enumerate(o["iou_thresholds"])}


def _head_layer(o: Options) -> dict:
    """Table 1: only the detection head, whose shared layers are counted one by one."""
    head = stock(MASK_RCNN)["model"]["roi_head"]["bbox_head"]
    if o["head"] != "fc":
        head = _bbox_head(head, {"l2c": o["head"], "l2c_post_reduce": True, "nl_before": False,
                                 "nl_after": False})
    return {"model": head, "layer": o["layer"]}


def _one_layer(head: Any, o: Options) -> Any:
    """Table 1 counts the row's layer among the head's shared layers: its convs and FCs with their own
    weights, in order, without the classifier and regressor."""
    import torch

    layers = [m for name, m in head.named_modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and not name.startswith(("fc_cls", "fc_reg"))]
    return layers[o["layer"]]


def _rpn_anchors(o: Options) -> dict:
    """Fig. 1: only the anchors of Mask R-CNN's RPN."""
    return {"anchor_generator": stock(MASK_RCNN)["model"]["rpn_head"]["anchor_generator"]}


def _r3_hours(o: Options) -> float:
    return hours_per_epoch(o["loops"])


# SBR-CNN (Sec. 4.7), as the authors' final config builds it (its 61.8M trainable parameters): a
# 3-loop R^3-CNN with rectangular L2C (the 7x3 conv halving the channels) and NL_b in the detection
# head, the Mask IoU branch with 7x7 L2C, and the best GRoIE of Table 10 as both extractors.
SBR_CNN = {"loops": 3, "l2c": "7x3-3x7", "l2c_post_reduce": False, "nl_before": True, "mask_iou": "7x7",
           "groie": True, "groie_pre": "conv7x7", "groie_post": "nonlocal7x7"}
_LAYER = {
    "head": Field(str, check=one_of("fc", *L2C), help="fc: Shared2FC; or an L2C head"),
    "layer": Field(int, check=lambda v: None if v >= 0 else f"must be >= 0, got {v}",
                   help="index of the layer among the head's shared layers"),
}
# Shared layers per head: two FCs, two 7x7 convs, or two 7x3 -> 3x7 pairs.
_LAYERS = {"fc": 2, "7x7": 2, "7x3-3x7": 4}


def _finish_layer(o: Options) -> Options | str:
    n = _LAYERS[o["head"]]
    return o if o["layer"] < n else f"layer {o['layer']}: the {o['head']} head has {n} shared layers (0-{n - 1})"

MODELS = [
    Model("r3_cnn", "R$^3$-CNN",
          "R^3-CNN: H RoI head pairs trained in L_t loops with growing IoU thresholds; FCC heads, Mask IoU, GRoIE",
          _r3_cnn, options=_options({}), finish=_finish, training=_training, gpu_hours_per_epoch=_r3_hours,
          iou_series=_loop_series),
    Model("sbr_cnn", "SBR-CNN", "SBR-CNN: R^3-CNN with FCC heads, Mask IoU branch and GRoIE (Sec. 4.7)",
          _r3_cnn, options=_options(SBR_CNN), finish=_finish, training=_training, gpu_hours_per_epoch=_r3_hours,
          iou_series=_loop_series),
    Model("head_layer", "layer", "one shared layer of a detection head (SBR-CNN Table 1): counted, not trained",
          _head_layer, options=_LAYER, finish=_finish_layer, trains=False, counted=_one_layer),
    Model("rpn_anchors", "RPN anchors", "the anchors of Mask R-CNN's RPN against the ground-truth boxes "
          "(Fig. 1): computed from annotations, not trained", _rpn_anchors, trains=False),
]
