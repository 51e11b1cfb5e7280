"""Benchmark: what sharing trainings saves when every SBR-CNN plan runs in one study at full scale.

    .venv/bin/python benchmarks/shared_work.py

Prints table rows, unique trainings, evaluation-only jobs and the estimated GPU-hours, against one
training per row. Writes configs into a temporary folder only; needs no COCO and submits nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sbrrepro.configs import full_scale, write_configs
from sbrrepro.costs import summarize
from sbrrepro.plan import load_plan
from sbrrepro.zoo import MODELS

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    plans = [p for p in map(load_plan, sorted((REPO / "plans").glob("*.yaml"))) if p.paper == "sbr-cnn"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for plan in plans:
            rows += zip(plan.rows, write_configs(plan, full_scale(Path(tmp) / "coco"), Path(tmp) / "configs"))
        trained = [(row, rc) for row, rc in rows if MODELS[row.model].trains]
        s = summarize(trained, Path(tmp), "full")
    print(f"plans: {', '.join(p.name for p in plans)}")
    print(f"table rows: {len(rows)} ({len(rows) - len(trained)} counted from the model, no job: Table 1, Fig. 1)")
    print(f"unique trainings: {s.trainings}")
    print(f"evaluation-only jobs: {s.evaluations}")
    print(f"estimated GPU-hours: {s.hours:.1f} (one training per row: {s.hours_one_per_row:.1f}; "
          f"saved: {s.hours_one_per_row - s.hours:.1f}, {100 * (1 - s.hours / s.hours_one_per_row):.0f}%)")


if __name__ == "__main__":
    main()
