"""`sbrrepro params`: every row's trainable parameters, counted on the model sbrrepro builds at the
paper's scale (the papers count trainable parameters, as mmcv 1.x's get_flops did), beside the
published count. Nothing is trained; a count needs only the config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .configs import build_config, build_model, full_scale
from .files import atomic_write
from .metrics import PARAM_UNITS, from_params
from .plan import Plan, Row
from .rows import COUNTED
from .study_files import Number, read
from .table import Table, TableRow
from .training import trainable
from .verdicts import Judged, verdict
from .verify import MATCH, MISSING, compare, number
from .zoo import MODELS


def count(row: Row) -> int:
    """Trainable parameters of what the paper counts of a row's model (the model's `counted`), built
    at the paper's scale."""
    model = build_model(build_config(row, full_scale(Path("coco"))))  # paths only, nothing read
    return trainable(MODELS[row.model].counted(model, row.options))


class Counts:
    """Rows' counts at the paper's scale by model and options (rows that share them share a count),
    kept in a JSON file where given: read once, written at each new count."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.known: dict[str, int] = read(path, {str: Number(0, 1e15, integer=True)}, "parameter counts by model "
                                          "and options", "delete it: sbrrepro counts them again"
                                          ) if path and path.exists() else {}

    def __call__(self, row: Row) -> int:
        key = json.dumps([row.model, row.options], sort_keys=True)
        if key not in self.known:
            self.known[key] = count(row)
            if self.path:
                atomic_write(self.path, json.dumps(self.known, indent=1))
        return self.known[key]


@dataclass(frozen=True)
class Counted:
    row: int
    label: str
    trainable: int
    published: dict[str, float | None]  # metric -> the published value, in the table's unit
    ours: dict[str, float]  # metric -> our count in that unit
    verdict: str
    note: str | None

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "label": self.label, "trainable": self.trainable, "ours": self.ours,
                "published": self.published, "verdict": self.verdict, "note": self.note}


def param_metrics(plan: Plan) -> list[str]:
    return [m for m in plan.metrics if m in PARAM_UNITS]


def count_plan(plan: Plan, counts: Counts) -> list[Counted]:
    """Every row of a plan whose table prints a parameter count, or (no such column) every row in
    millions."""
    wanted = param_metrics(plan) or ["params_M"]
    out = []
    for row in plan.model_rows:
        n = counts(row)
        ours = from_params(n, wanted)
        published = plan.published[row.number]
        _, verdict = compare(ours, published, wanted, plan.tolerance)
        verdict = verdict or MISSING  # nothing printed to compare with
        out.append(Counted(row.number, row.label, n, {m: number(published.get(m)) for m in wanted}, ours,
                           verdict, row.note))
    return out


def table(plan: Plan, counted: list[Counted]) -> Table:
    """A plan's counts as the one table model (each renderer draws it): per row its trainable
    parameters, then each counted column beside the published one."""
    wanted = param_metrics(plan) or ["params_M"]
    rows = []
    for c in counted:
        cells, judgement = compare(c.ours, plan.published[c.row], wanted, plan.tolerance)
        judged = verdict(Judged(COUNTED, (), judgement, plan.has_published, scale_free=True))
        rows.append(TableRow([str(c.row), c.label, f"{c.trainable:,}"], cells, judged))
    notes = [f"Row {c.row}: {c.note}" for c in counted if c.note and c.verdict != MATCH]
    return Table(f"{plan.name}: trainable parameters", "", ["#", "row", "trainable"], wanted, rows, "", notes=notes)
