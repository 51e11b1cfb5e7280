"""The models a plan row may name, and the options each accepts (plain data, no MMDetection import).

`configs.py` turns a model name and its validated options into an MMDetection config.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .schema import Field, positive

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


MODELS: dict[str, ModelSpec] = {
    "mask_rcnn": ModelSpec("Mask R-CNN", "Mask R-CNN, ResNet-FPN (MMDetection's stock model)"),
    "r3_cnn": ModelSpec(
        "R$^3$-CNN",
        "R^3-CNN: one RoI head pair trained in L_t loops with growing IoU thresholds",
        options={
            "loops": Field(int, 3, _in_range(1, MAX_LOOPS), "L_t, the training loops"),
            "eval_loops": Field(int, None, _in_range(1, MAX_LOOPS), "L_e; defaults to loops"),
            "alternation": Field(str, None, None, "which head pair each loop uses, e.g. 'aab'"),
            "iou_thresholds": Field(("list", float), None, positive, "one per training loop"),
            "loss_weights": Field(("list", float), None, positive, "alpha_t, one per training loop"),
            "mask_loop": Field(bool, True, None, "chain the mask head over the previous loops in training"),
        },
        finish=_finish_r3,
        training=_training_r3,
    ),
}
