"""Results for users' own analysis: one line per row and seed (a row that runs nothing: one line),
as CSV and Parquet, through pandas."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .layout import StudyPaths

if TYPE_CHECKING:
    from .collect import RowResult


def lines(results: list[RowResult]) -> list[dict[str, Any]]:
    """Each run's own numbers (ours_<metric>), beside the row's published ones and its verdict."""
    out = []
    for r in results:
        cells = r.table_row.cells
        common = {"plan": r.plan.name, "row": r.row.number, "label": r.row.label, "kind": r.kind,
                  "verdict": r.verdict.word, "seeds": len(r.runs),
                  **{f"published_{m}": c.published for m, c in cells.items()}}
        runs = [(run.state.seed, run.state.key, run.state.state, run.metrics) for run in r.runs] or [
            (None, None, r.kind, r.metrics[0] if r.metrics else {})]
        for seed, key, state, metrics in runs:
            out.append({**common, "seed": seed, "key": key, "state": state,
                        **{f"ours_{m}": metrics.get(m) for m in cells}})
    return out


def write_rows(results: list[RowResult], paths: StudyPaths) -> None:
    import pandas as pd

    frame = pd.DataFrame(lines(results))
    for path, write in ((paths.results_csv, lambda p: frame.to_csv(p, index=False)),
                        (paths.results_parquet, lambda p: frame.to_parquet(p, index=False))):
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        write(tmp)
        tmp.replace(path)  # whole or not at all
