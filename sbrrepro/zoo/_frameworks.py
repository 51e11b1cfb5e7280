"""The MMDetection a paper's numbers came from (a recipe's `framework`) and the model settings of that
era which MMDetection 3.3 changed, applied to a built config so that a row is the model its authors
trained. Which of an era's settings a model takes is the model's own (`Model.era_settings`): a model
whose shipped config kept them (Grid R-CNN, HTC, SCNet), or whose authors set only some (CoMask),
takes fewer. Plain dicts only.

The 1.x settings are those of MMDetection's `configs/legacy_1.x/mask-rcnn_r50_fpn_1x_coco_v1.py` (the
1.x model in 3.3's modules, listed in MMDetection's compatibility notes), and `allowed_border=0` of
1.x's own configs (the legacy config leaves 3.3's -1). MMDetection 2.8 (SBR-CNN's fork) already had
3.3's defaults for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..vocabulary import FRAMEWORK_KEY
from ._parts import walk

INSTALLED = "mmdet-3.3"  # what a recipe without `framework` builds: the installed MMDetection's defaults
# The top-level key of a config built with an era's settings: the era and the settings applied (no key
# where none applied, so that such a config is the plain one, key included).
MARKER = FRAMEWORK_KEY


def _heads(node: Any) -> list[dict]:
    """A head config, or each of a cascade's list of them."""
    return [h for h in (node if isinstance(node, list) else [node]) if isinstance(h, dict)]


def _rpn_loss(model: dict) -> None:
    model["rpn_head"]["loss_bbox"] = dict(type="SmoothL1Loss", beta=1.0 / 9.0, loss_weight=1.0)


def _rcnn_loss(model: dict) -> None:
    for head in _heads(model["roi_head"].get("bbox_head")):
        if "loss_bbox" in head:
            head["loss_bbox"] = dict(type="SmoothL1Loss", beta=1.0, loss_weight=1.0)


def _proposals(model: dict) -> None:
    model["train_cfg"]["rpn_proposal"]["max_per_img"] = 2000


def _allowed_border(model: dict) -> None:
    model["train_cfg"]["rpn"]["allowed_border"] = 0


def _low_quality(model: dict) -> None:
    for stage in _heads(model["train_cfg"]["rcnn"]):
        stage["assigner"]["match_low_quality"] = True


def _anchors(model: dict) -> None:
    model["rpn_head"]["anchor_generator"].update(type="LegacyAnchorGenerator", center_offset=0.5)


def _coder(model: dict) -> None:
    for head in [model["rpn_head"], *_heads(model["roi_head"].get("bbox_head"))]:
        if head.get("bbox_coder", {}).get("type") == "DeltaXYWHBBoxCoder":
            head["bbox_coder"]["type"] = "LegacyDeltaXYWHBBoxCoder"


def _roi_align(model: dict) -> None:
    """Every RoIAlign (GRoIE's per-level ones too) as 1.x's: legacy coordinates, 2 points per bin
    where the model leaves it adaptive (the legacy config's sampling_ratio=2, 1.x's sample_num=2)."""
    def legacy(d: dict) -> None:
        if d.get("type") == "RoIAlign":
            d["aligned"] = False
            if not d.get("sampling_ratio"):
                d["sampling_ratio"] = 2
    walk(model, legacy)


# name -> (what it sets, as the setup table and notes say it; the change on the config's `model`)
SETTINGS: dict[str, tuple[str, Callable[[dict], None]]] = {
    "rpn_loss": ("RPN SmoothL1 (beta 1/9)", _rpn_loss),
    "rcnn_loss": ("R-CNN SmoothL1 (beta 1)", _rcnn_loss),
    "proposals": ("2000 training proposals", _proposals),
    "allowed_border": ("allowed_border 0", _allowed_border),
    "low_quality": ("R-CNN low-quality matches", _low_quality),
    "anchors": ("LegacyAnchorGenerator (offset 0.5)", _anchors),
    "coder": ("LegacyDeltaXYWHBBoxCoder", _coder),
    "roi_align": ("RoIAlign aligned=False", _roi_align),
}
ALL = tuple(SETTINGS)
# The settings of each era that 3.3 changed (2.8 had 3.3's defaults for all of them).
ERAS: dict[str, tuple[str, ...]] = {"mmdet-1.x": ALL, "mmdet-2.8": (), "mmdet-3.3": ()}


def era(framework: str | None) -> str:
    return framework or INSTALLED


def settings(takes: tuple[str, ...], framework: str | None) -> tuple[str, ...]:
    """The settings a model that takes `takes` gets under `framework`, in SETTINGS' order."""
    return tuple(s for s in ERAS[era(framework)] if s in takes)


def apply(cfg: dict, takes: tuple[str, ...], framework: str | None) -> tuple[str, ...]:
    """`cfg` (a built config) with `framework`'s settings that the model takes, and the MARKER that
    records them; returns them."""
    applied = settings(takes, framework)
    for name in applied:
        SETTINGS[name][1](cfg["model"])
    if applied:
        cfg[MARKER] = dict(era=era(framework), settings=list(applied))
    return applied


def describe(framework: str | None, applied: tuple[str, ...] | list[str]) -> str:
    """One line: the era (none named: the installed one's) and what of its settings a row builds."""
    built = ", ".join(SETTINGS[s][0] for s in applied) or "MMDetection 3.3's defaults"
    return f"{framework}: {built}" if framework else built


def recorded(marker: dict | None) -> tuple[str | None, tuple[str, ...]]:
    """(era, settings) from a run's MARKER (None: built without any era's settings)."""
    if not marker:
        return None, ()
    return marker.get("era"), tuple(marker.get("settings", ()))


def _spans(numbers: list[int]) -> str:
    """1, 2, 5, 6, 7 -> '1-2, 5-7'."""
    out: list[list[int]] = []
    for n in sorted(numbers):
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def table_note(rows: list[tuple[int, str | None, tuple[str, ...]]]) -> str | None:
    """The line under a table that says which MMDetection's settings its rows are built with, from
    (row number, its recipe's framework, the settings it takes); None where no row names a framework."""
    named = [(n, f, s) for n, f, s in rows if f is not None]
    if not named:
        return None
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for n, f, s in named:
        groups.setdefault((f, s), []).append(n)
    parts = [f"row{'s' if len(ns) > 1 else ''} {_spans(ns)}: {describe(f, s)}" for (f, s), ns in groups.items()]
    return ("Model settings, of the MMDetection each paper's number came from (the rows' own; a row built "
            "with another's is footnoted): " + "; ".join(parts) + ".")
