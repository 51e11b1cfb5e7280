"""Benchmark: every unique full-scale training of the five papers, at full width, takes one real
training step (after one not timed) and one prediction in this process, from its written config with
random initial weights, on the embedded dataset at 320x320 (no COCO, no GPU, no internet needed).

    .venv/bin/python -m benchmarks.preflight [--size 320x320] [--only MODEL ...] [--one-per-model]

Prints per training its model, seconds per iteration, peak memory (the process's RSS on a CPU) and
the GPU-hour estimate before (the dry run's basis) and after: the CPU step time relative to Mask
R-CNN's, applied to the paper's Mask R-CNN duration (a CPU ratio standing for a GPU one, which the
preflight of a GPU replaces). Writes into a temporary folder only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sbrrepro.costs import plan_costs
from sbrrepro.preflight import embedded_data, measure
from sbrrepro.prepare import Request, prepare
from sbrrepro.zoo import hours_per_epoch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="320x320")
    p.add_argument("--only", nargs="*", help="models to measure (default: all)")
    p.add_argument("--one-per-model", action="store_true", help="only each model's first training")
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    files = sorted(str(f) for f in REPO.glob("plans/*/*.yaml") if f.name != "recipe.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare(Request(files, Path(tmp) / "study", data_root=f"{tmp}/coco", dry_run=True))
        costs = plan_costs(prepared.chosen, prepared.study.paths, "full")
        data = str(embedded_data(prepared.study))
        trainings: dict[str, tuple] = {}
        for row, rc in prepared.chosen:
            seen = {r.model for r, _ in trainings.values()} if args.one_per_model else set()
            if (not args.only or rc.model in args.only) and rc.train_key not in trainings and rc.model not in seen:
                trainings[rc.train_key] = (row, rc)
        print(f"{len(trainings)} unique trainings at {size[0]}x{size[1]}, full width, random weights, one step")
        print(f"{'model':<22} {'training':<28} {'s/iter':>7} {'peak GB':>8} {'GPU-h before':>12}  basis")
        measured, start = [], time.perf_counter()
        for key, (row, rc) in trainings.items():
            f = measure(str(rc.train_path), key, [f"{rc.plan}:{rc.row}"], size, 1, data, True, None, warmup=1,
                        without_recorder=False)
            measured.append((row, rc, f))
            if f.error:
                print(f"{rc.model:<22} {key:<28} crashed: {f.error}", flush=True)
                continue
            print(f"{rc.model:<22} {key:<28} {f.s_per_iter:7.2f} {f.peak_memory_GB:8.2f} "
                  f"{costs[key].hours:12.1f}  {costs[key].basis}", flush=True)
        reference = [f.s_per_iter for row, _, f in measured if row.model == "mask_rcnn" and not f.error]
        if reference:
            per_epoch = hours_per_epoch(0) / min(reference)
            print(f"\nafter: Mask R-CNN's paper duration x (CPU s/iter / Mask R-CNN's fastest, {min(reference):.2f} s)")
            for row, rc, f in measured:
                if not f.error:
                    print(f"{rc.model:<22} {rc.train_key:<28} {costs[rc.train_key].hours:12.1f} -> "
                          f"{row.recipe['epochs'] * per_epoch * f.s_per_iter:8.1f} GPU-hours")
        print(f"\n{len(measured)} trainings in {(time.perf_counter() - start) / 60:.1f} min, "
              f"{sum(bool(f.error) for _, _, f in measured)} crashed")


if __name__ == "__main__":
    main()
