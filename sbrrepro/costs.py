"""What trainings cost, for planning: GPU-hours at full scale (process-hours at smoke scale).

Before anything has run, full-scale estimates come from the SBR-CNN paper's own durations (Sec.
4.4.1, on 8 V100s): Mask R-CNN 3x (36 epochs) in about 35 h, R^3-CNN with 3 loops (12 epochs) in
about 25 h; an R^3-CNN loop is taken to cost a third of the difference. The paper gives no other
durations: HTC (3 stages) is taken as a 3-loop R^3-CNN, Faster R-CNN and CondInst as Mask R-CNN;
heavier heads and backbones are not priced until measured. `collect` then measures each
finished run (wall time x processes) and later estimates use the study's own measurements.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .configs import RowConfig
from .plan import Row
from .training import DONE_FILE, PROVENANCE_FILE

MASK_RCNN_PER_EPOCH = 35 * 8 / 36  # GPU-hours
R3_PER_LOOP_EPOCH = (25 * 8 / 12 - MASK_RCNN_PER_EPOCH) / 3
COSTS_FILE = "costs.json"


def paper_estimate(row: Row) -> float:
    """Full-scale GPU-hours of the training a row needs, from the paper's durations."""
    loops = row.options.get("loops", 3 if row.model == "htc" else 0)
    return row.recipe["epochs"] * (MASK_RCNN_PER_EPOCH + R3_PER_LOOP_EPOCH * loops)


def measured(run_dir: Path) -> float | None:
    """Hours x processes that a finished run took, from what its job wrote."""
    try:
        started = json.loads((run_dir / PROVENANCE_FILE).read_text())
        done = json.loads((run_dir / DONE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return (done["finished"] - started["started"]) / 3600 * started["processes"]


@dataclass(frozen=True)
class Summary:
    rows: int
    trainings: int
    evaluations: int
    hours: float | None  # for the unique trainings; None until every one is known
    hours_one_per_row: float | None  # had every row trained its own model


def summarize(rows: list[tuple[Row, RowConfig]], study_root: Path, scale: str) -> Summary:
    """What a set of plan rows needs, and what sharing trainings saves."""
    hours = estimate(rows, study_root, scale)
    known = all(h is not None for h in hours.values())
    return Summary(len(rows), len(hours), len({rc.key for _, rc in rows if rc.eval_only}),
                   sum(hours.values()) if known else None,
                   sum(hours[rc.train_key] for _, rc in rows) if known else None)


def estimate(rows: list[tuple[Row, RowConfig]], study_root: Path, scale: str) -> dict[str, float | None]:
    """Hours per training key: measured in this study where it ran, else (full scale) the paper's."""
    path = study_root / COSTS_FILE
    known = json.loads(path.read_text()) if path.exists() else {}
    out: dict[str, float | None] = {}
    for row, rc in rows:
        if rc.train_key in known:
            out[rc.train_key] = known[rc.train_key]
        elif rc.train_key not in out:
            out[rc.train_key] = paper_estimate(row) if scale == "full" else None
    return out
