"""Benchmark: what sharing trainings saves when every SBR-CNN plan runs in one study at full scale.

    .venv/bin/python -m benchmarks.shared_work

Prints table rows, unique trainings, evaluation-only jobs and the estimated GPU-hours, against one
training per row. Writes configs into a temporary folder only; needs no COCO and submits nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sbrrepro.costs import summarize
from sbrrepro.prepare import Request, prepare

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    files = sorted(str(p) for p in (REPO / "plans" / "sbr-cnn").glob("*.yaml") if p.name != "recipe.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare(Request(files, Path(tmp) / "study", data_root=f"{tmp}/coco", dry_run=True))
        s, _ = summarize(prepared.chosen, prepared.study.paths, "full")
    rows, trained = prepared.rows, prepared.chosen
    print(f"plans: {', '.join(sorted({plan.name for plan, _ in rows}))}")
    print(f"table rows: {len(rows)} ({len(rows) - len(trained)} counted from the model, no job: Table 1, Fig. 1)")
    print(f"unique trainings: {s.trainings}")
    print(f"evaluation-only jobs: {s.evaluations}")
    print(f"estimated GPU-hours: {s.hours:.1f} (one training per row: {s.hours_one_per_row:.1f}; "
          f"saved: {s.hours_one_per_row - s.hours:.1f}, {100 * (1 - s.hours / s.hours_one_per_row):.0f}%)")


if __name__ == "__main__":
    main()
