"""Benchmark: every reader of structured input fuzzed without pytest, with the generators and the forked
harness of tests/system/test_fuzz.py (tests/fuzzing.py), drawn by a seeded random.Random instead of Hypothesis.

    .venv/bin/python -m benchmarks.fuzz --cases 20000 [--seed 0] [--jobs 2]

The cases go to the readers in turn. Prints per reader the cases tried, clean results, one-line errors,
tracebacks, hangs (over 5 s), over memory (1 GiB), crashes, multi-line errors and failed calls that wrote,
then the smallest input of each kind of failure, then each reader on non-regular files (a FIFO, a
folder, /dev/zero, a sparse 2 GiB file, none).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator

from tests import fuzzing


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=2000, help="generated cases, spread over the readers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="children at once (the cases are drawn in order either way)")
    p.add_argument("--failures", type=int, default=3, help="kinds of failure shown per reader")
    args = p.parse_args()
    targets = fuzzing.TARGETS
    with fuzzing.workspace() as ws:
        valid = {t.name: ws.valid(t) for t in targets}
        src = fuzzing.RandomSource(random.Random(args.seed))

        def cases() -> Iterator:
            for i in range(args.cases):  # drawn one by one in the parent: the same cases for any --jobs
                target = targets[i % len(targets)]
                yield fuzzing.make_case(target, valid[target.name], src)

        tally = fuzzing.Tally()
        start = time.perf_counter()
        for n, result in enumerate(fuzzing.run_cases(ws, cases(), args.jobs), start=1):
            tally.add(result)
            if n % 1000 == 0:
                print(f"... {n:,} cases, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - start
        print(f"{args.cases:,} generated cases (seed {args.seed}) over {len(targets)} readers in {seconds:.0f} s "
              f"({1000 * seconds / max(1, args.cases):.0f} ms a case, {args.jobs} at once)")
        print(tally.table())
        lines = tally.failure_lines(args.failures)
        print(f"\nfailures: {sum(len(f) for f in tally.failures.values())} kind(s); the smallest input of each"
              + (f" (at most {args.failures} per reader)" if lines else ""))
        print("\n".join(lines) or "none")

        special = fuzzing.Tally()
        specials = [fuzzing.special_case(t, s) for t in targets for s in fuzzing.SPECIALS]
        for result in fuzzing.run_cases(ws, specials, jobs=4):  # FIFOs wait out the time limit: 4 at once
            special.add(result)
        print(f"\nnon-regular files ({', '.join(fuzzing.SPECIALS)}), each reader once:")
        print(special.table())
        print("\n".join(special.failure_lines(len(fuzzing.SPECIALS))) or "no failures")


if __name__ == "__main__":
    main()
