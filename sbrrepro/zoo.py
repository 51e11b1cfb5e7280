"""The models a plan row may name, and the options each accepts (plain data, no MMDetection import).

`configs.py` turns a model name and its validated options into an MMDetection config.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .schema import Field, one_of, positive

MAX_LOOPS = 5
# Defaults per loop, from the authors' configs: IoU thresholds 0.5, 0.6, 0.7, ... and loss weights
# alpha_t 1, 0.75, 0.5, 0.3 (the 4-loop R^3-CNN of SBR-CNN Table 3).
DEFAULT_IOU = (0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_LOSS_WEIGHTS = (1.0, 0.75, 0.5, 0.3, 0.2)


@dataclass(frozen=True)
class ModelSpec:
    title: str  # as figures name it (matplotlib mathtext)
    description: str
    options: dict[str, Field] = field(default_factory=dict)
    # Cross-field check and completion of defaults that depend on other options.
    finish: Callable[[dict[str, Any]], dict[str, Any] | str] = lambda o: o
    # The options of the training a row needs: its test-time-only options set as that training
    # evaluates itself. Rows that differ only in those share one training (evaluation-only rows).
    training: Callable[[dict[str, Any]], dict[str, Any]] = lambda o: o
    trains: bool = True  # False: nothing to train or evaluate (a parameter count)


def _in_range(lo: int, hi: int) -> Callable[[Any], str | None]:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}, got {v}"


def _finish_r3(o: dict[str, Any]) -> dict[str, Any] | str:
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


def _training_r3(o: dict[str, Any]) -> dict[str, Any]:
    """L_e only matters at test time; so does the tail of the alternation past L_t, unless it names
    a pair that training never uses (then the weights differ and nothing is shared)."""
    train_alt = o["alternation"][: o["loops"]]
    alternation = train_alt if set(train_alt) == set(o["alternation"]) else o["alternation"]
    return {**o, "eval_loops": o["loops"], "alternation": alternation}


def _finish_groie(o: dict[str, Any]) -> dict[str, Any] | str:
    if not o["groie"] and (o["groie_pre"] or o["groie_post"]):
        return "groie_pre / groie_post need groie: true"
    return o


def _finish_r3_all(o: dict[str, Any]) -> dict[str, Any] | str:
    for name in ("nl_before", "nl_after"):
        if o[name] and o["l2c"] == "none":
            return f"{name} needs L2C convolutions in the detection head (l2c: 7x7 or 7x3-3x7)"
        if o[f"mask_iou_{name}"] and o["mask_iou"] in ("none", "fc"):
            return f"mask_iou_{name} needs an L2C Mask IoU branch (mask_iou: 7x7 or 7x3-3x7)"
    finished = _finish_groie(o)
    return finished if isinstance(finished, str) else _finish_r3(finished)


# Pre-/post-processing modules of GRoIE (SBR-CNN Tables 8-9; 'attention' is the ICPR GRoIE's).
GROIE_MODULES = ("conv3x3", "conv5x5", "conv7x7", "conv7x3-3x7", "nonlocal1x1", "nonlocal7x7", "attention")
L2C = ("none", "7x7", "7x3-3x7")

ADDON = {"addon": Field(str, "none", one_of("none", "gcnet", "dcn"),
                        "GC-Net context blocks or DCN in ResNet stages c3-c5 (SBR-CNN Table 11)")}
GROIE = {
    "groie": Field(bool, False, None, "GRoIE in place of the RoI extractors"),
    "groie_pre": Field(str, None, one_of(*GROIE_MODULES), "GRoIE pre-processing module"),
    "groie_post": Field(str, None, one_of(*GROIE_MODULES), "GRoIE post-processing module"),
}


def _r3_options(defaults: dict[str, Any]) -> dict[str, Field]:
    fields = {
        "loops": Field(int, 3, _in_range(1, MAX_LOOPS), "L_t, the training loops"),
        "eval_loops": Field(int, None, _in_range(1, MAX_LOOPS), "L_e; defaults to loops"),
        "alternation": Field(str, None, None, "which head pair each loop uses, e.g. 'aab'"),
        "iou_thresholds": Field(("list", float), None, positive, "one per training loop"),
        "loss_weights": Field(("list", float), None, positive, "alpha_t, one per training loop"),
        "mask_loop": Field(bool, True, None, "chain the mask head over the previous loops in training"),
        "l2c": Field(str, "none", one_of(*L2C), "FCC: the detection head's FCs become convolutions"),
        "l2c_post_reduce": Field(bool, True, None, "7x3-3x7: the 7x3 conv keeps the channels, the 3x7 halves them"),
        "nl_before": Field(bool, False, None, "NL_b: a 7x7 non-local block before the L2C convolutions"),
        "nl_after": Field(bool, False, None, "NL_a: a 7x7 non-local block after them"),
        "mask_iou": Field(str, "none", one_of("none", "fc", *L2C[1:]),
                          "Mask IoU branch: none, the original (fc) or with L2C convolutions"),
        "mask_iou_nl_before": Field(bool, False, None, "NL_b in the Mask IoU branch"),
        "mask_iou_nl_after": Field(bool, False, None, "NL_a in the Mask IoU branch"),
        **GROIE,
        **ADDON,
    }
    return {k: dataclasses.replace(f, default=defaults.get(k, f.default)) for k, f in fields.items()}


# SBR-CNN (Sec. 4.7): the 3-loop R^3-CNN of Table 7 row 4 (rectangular L2C with NL_b in the
# detection head, the Mask IoU branch with 7x7 L2C) with the best GRoIE of Table 10 as both extractors.
SBR_CNN = {"loops": 3, "l2c": "7x3-3x7", "l2c_post_reduce": False, "nl_before": True, "mask_iou": "7x7",
           "groie": True, "groie_pre": "conv7x7", "groie_post": "nonlocal7x7"}

MODELS: dict[str, ModelSpec] = {
    "mask_rcnn": ModelSpec("Mask R-CNN", "Mask R-CNN, ResNet-FPN (MMDetection's stock model)",
                           options={**ADDON, **GROIE}, finish=_finish_groie),
    "faster_rcnn": ModelSpec("Faster R-CNN", "Faster R-CNN, ResNet-FPN; with GRoIE for SBR-CNN Tables 8-10",
                             options=dict(GROIE), finish=_finish_groie),
    "htc": ModelSpec("HTC", "Hybrid Task Cascade without the semantic branch", options=dict(ADDON)),
    "condinst": ModelSpec("CondInst", "CondInst, ResNet-FPN (MMDetection's model)"),
    "r3_cnn": ModelSpec(
        "R$^3$-CNN",
        "R^3-CNN: H RoI head pairs trained in L_t loops with growing IoU thresholds; FCC heads, Mask IoU, GRoIE",
        options=_r3_options({}),
        finish=_finish_r3_all,
        training=_training_r3,
    ),
    "sbr_cnn": ModelSpec("SBR-CNN", "SBR-CNN: R^3-CNN with FCC heads, Mask IoU branch and GRoIE (Sec. 4.7)",
                         options=_r3_options(SBR_CNN), finish=_finish_r3_all, training=_training_r3),
    "head_layer": ModelSpec(
        "layer", "one shared layer of a detection head (SBR-CNN Table 1): counted, not trained",
        options={"head": Field(str, check=one_of("fc", *L2C[1:]), help="fc: Shared2FC; or an L2C head"),
                 "layer": Field(int, check=lambda v: None if v >= 0 else f"must be >= 0, got {v}",
                                help="index of the layer among the head's shared layers")},
        trains=False,
    ),
    "rpn_anchors": ModelSpec(
        "RPN anchors", "the anchors of Mask R-CNN's RPN against the ground-truth boxes (Fig. 1): computed "
        "from annotations, not trained", trains=False),
}
