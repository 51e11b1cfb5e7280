"""What trainings cost, for planning: GPU-hours at full scale (process-hours at smoke scale).

Before anything has run, full-scale estimates come from each zoo model's own (from its paper's
durations where it gives them; unknown otherwise). `collect` then measures each finished run (wall
time x processes) and later estimates use the study's own measurements.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .configs import RowConfig
from .layout import RunPaths, StudyPaths
from .plan import Row
from .zoo import MODELS


def paper_estimate(row: Row) -> float | None:
    """Full-scale GPU-hours of the training a row needs, before anything was measured."""
    per_epoch = MODELS[row.model].gpu_hours_per_epoch(row.options)
    return None if per_epoch is None else row.recipe["epochs"] * per_epoch


def measured(run: RunPaths) -> float | None:
    """Hours x processes that a finished run took, from what its job wrote."""
    try:
        started = json.loads(run.provenance.read_text())
        done = json.loads(run.done.read_text())
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


def summarize(rows: list[tuple[Row, RowConfig]], paths: StudyPaths, scale: str) -> Summary:
    """What a set of plan rows needs, and what sharing trainings saves."""
    hours = estimate(rows, paths, scale)
    known = all(h is not None for h in hours.values())
    return Summary(len(rows), len(hours), len({rc.key for _, rc in rows if rc.eval_only}),
                   sum(hours.values()) if known else None,
                   sum(hours[rc.train_key] for _, rc in rows) if known else None)


def estimate(rows: list[tuple[Row, RowConfig]], paths: StudyPaths, scale: str) -> dict[str, float | None]:
    """Hours per training key: measured in this study where it ran, else (full scale) the paper's."""
    known = json.loads(paths.costs.read_text()) if paths.costs.exists() else {}
    out: dict[str, float | None] = {}
    for row, rc in rows:
        if rc.train_key in known:
            out[rc.train_key] = known[rc.train_key]
        elif rc.train_key not in out:
            out[rc.train_key] = paper_estimate(row) if scale == "full" else None
    return out
