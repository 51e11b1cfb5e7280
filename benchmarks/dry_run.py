"""Benchmark: how long `sbrrepro run PLANS --dry-run` takes for every plan of every paper, as a
user types it (a fresh process each time: interpreter start and imports included).

    .venv/bin/python -m benchmarks.dry_run [--rounds 5]

Prints, for a fresh study and for a re-run on that study (which the study's config cache serves),
the rows, the median seconds over the rounds, the seconds per row and the goal (3 s and 1 s).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _timed(args: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sbrrepro", *args], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    rounds = p.parse_args().rounds
    plans = sorted(str(f) for f in (REPO / "plans").glob("*/*.yaml") if f.name != "recipe.yaml")
    fresh, rerun, rows = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            study = Path(tmp) / "study"
            shutil.rmtree(study, ignore_errors=True)
            args = ["run", *plans, "--dry-run", "--study", str(study), "--data-root", f"{tmp}/coco"]
            seconds, out = _timed(args)
            fresh.append(seconds)
            rerun.append(_timed(args)[0])
            rows = int(re.search(r"dry run: (\d+) row", out).group(1))
    print(f"plans: {len(plans)}; rows that run jobs: {rows}; median of {rounds} rounds")
    for name, times, goal in (("fresh study", fresh, 3.0), ("re-run", rerun, 1.0)):
        median = statistics.median(times)
        met = "met" if median < goal else "NOT met"
        print(f"{name:<12} {median:6.2f} s  {median / rows:.4f} s/row  (goal < {goal:g} s: {met})")


if __name__ == "__main__":
    main()
