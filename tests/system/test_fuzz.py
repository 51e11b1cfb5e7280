"""Every reader of structured input, fuzzed (the generators and the forked harness: tests/fuzzing.py): on
random, truncated and mutated files, and on non-regular ones, each ends with a clean result or its one-line
UserError, within 5 s and 1 GiB, and writes nothing when it fails; the command line exits 0 or 2 with one
stderr line. Hypothesis draws the cases, derandomized: the same cases on every run of a source tree (it mixes
the repository's own literals into its draws, so editing sbrrepro may change them)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from tests.fuzzing import (
    BY_NAME,
    ERROR,
    HANG,
    MULTILINE,
    OK,
    PLAN,
    REPO,
    SPECIALS,
    STUDY,
    TARGETS,
    TRACEBACK,
    WROTE,
    Case,
    Outcome,
    Result,
    Tally,
    Target,
    Workspace,
    changes,
    make_case,
    run_cases,
    snapshot,
    special_case,
    workspace,
)

EXAMPLES = 60  # generated cases per reader: ~15 ms each, forked (a hang: 5 s)
CLI_BYTES = 1 << 20  # the largest generated input a command is run on
SPECIAL_JOBS = 4  # non-regular files at once: FIFOs wait out the time limit; /dev/zero takes up to 1 GiB each


def fuzz_settings(examples: int) -> Callable:
    # no shrinking (a failing case is kept whole, and the smallest of its kind is reported) and no database:
    # the test collects every outcome and asserts once, so that one run reports every reader's failures
    return settings(derandomize=True, deadline=None, max_examples=examples, database=None,
                    phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))


class HypothesisSource:
    """fuzzing.Source over Hypothesis's draws."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def blob(self, max_size: int) -> bytes:
        return self.data.draw(st.binary(max_size=max_size))


@pytest.fixture(scope="module")
def ws() -> Iterator[Workspace]:
    with workspace() as made:
        yield made


def _verdict(tally: Tally) -> str:
    return tally.table() + "\n" + "\n".join(tally.failure_lines())


def test_the_valid_fixtures_read_cleanly(ws):
    """Without this, every mutation would be measured against a fixture the reader already refuses."""
    cases = [Case(t.name, "valid", "the valid fixture", ws.valid(t)) for t in TARGETS]
    bad = [(r.case.target, r.outcome) for r in run_cases(ws, cases) if r.outcome.kind != OK]
    assert not bad, bad


@pytest.mark.parametrize("target", TARGETS, ids=[t.slug for t in TARGETS])
def test_a_reader_survives_generated_inputs(ws, target: Target):
    tally = Tally()
    valid = ws.valid(target)

    @fuzz_settings(EXAMPLES)
    @given(st.data())
    def one(data: Any) -> None:
        for result in run_cases(ws, [make_case(target, valid, HypothesisSource(data))]):
            tally.add(result)

    one()
    if tally.failures:
        pytest.fail(_verdict(tally), pytrace=False)


def test_readers_refuse_non_regular_files(ws):
    """A FIFO (which blocks an open for reading), a folder, /dev/zero, a sparse 5 GiB file, no file."""
    tally = Tally()
    cases = [special_case(t, s) for s in SPECIALS for t in TARGETS]
    for result in run_cases(ws, cases, jobs=SPECIAL_JOBS):
        tally.add(result)
    if tally.failures:
        pytest.fail(_verdict(tally), pytrace=False)


# --- the command line, end to end: exit 0 or 2, never a traceback, one stderr line with 2 -----------------------


def _cli(ws: Workspace, case: Case, args: Callable[[Path], list[str]]) -> Result:
    """The command on the case's files in a fresh process: exit 0 is a clean result, exit 2 with one stderr
    line and no file changed the one error, anything else a failure."""
    prepared = ws.prepare(case)
    folder = prepared.folder
    env = {**os.environ, "XDG_CACHE_HOME": str(folder / ".cache")}  # check-data's cache of passed checks
    try:
        done = subprocess.run([sys.executable, "-m", "sbrrepro", *args(folder)], cwd=folder, capture_output=True,
                              text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:
        done = None
    if done is None:
        shutil.rmtree(folder, ignore_errors=True)
        return Result(case, Outcome(HANG, "the command ran over 120 s"))
    outcome = Outcome(OK if done.returncode == 0 else ERROR, done.stderr.strip()[:600])
    lines = done.stderr.strip().splitlines()
    if done.returncode not in (0, 2) or "Traceback" in done.stderr:
        frames = re.findall(r'File "[^"]*/(sbrrepro/[^"]+)", line (\d+), in (\S+)', done.stderr)
        where = " ".join(f"{f}:{n} {name}" for f, n, name in frames[-1:])  # the innermost sbrrepro frame
        last = lines[-1][:600] if lines else "no stderr"  # the exception's line, where it is a traceback
        outcome = Outcome(TRACEBACK, f"{last} (exit {done.returncode})", where)
    elif done.returncode == 2 and len(lines) != 1:
        outcome = Outcome(MULTILINE, f"{len(lines)} stderr lines: {' | '.join(lines[:3])[:600]}")
    elif done.returncode == 2 and (changed := changes(prepared.before, snapshot(folder))):
        outcome = Outcome(WROTE, f"exit 2 ({lines[0][:200]}) but changed {changed[:3]}")
    shutil.rmtree(folder, ignore_errors=True)
    return Result(case, outcome)


def _run_plan(folder: Path) -> list[str]:
    return ["run", str(folder / PLAN), "--dry-run", "--smoke", "--study", str(folder / "s")]


COMMANDS: list[tuple[str, str, Callable[[Path], list[str]], int]] = [
    # (id, reader whose file is mutated, the command, cases)
    ("run-plan", "plan (load_plans)", _run_plan, 8),
    ("run-recipe", "recipe (load_plan)", _run_plan, 4),
    ("run-cluster", "cluster profile (cluster.load_cluster)",
     lambda f: ["run", str(REPO / PLAN), "--cluster", str(f / "cluster" / "profile.yaml"), "--dry-run", "--smoke",
                "--study", str(f / "s")], 6),
    ("check-data-profile", "dataset profile (datasets.load_dataset)",
     lambda f: ["check-data", str(f / "data" / "profile.yaml"), "--study", str(f / "s")], 6),
    ("check-data-annotations", "annotations (datacheck.check)",
     lambda f: ["check-data", str(f / "data" / "profile.yaml"), "--study", str(f / "s")], 6),
    ("import-stats", "server stats (server.import_stats)",
     lambda f: ["import-stats", "scnet/table1:1", str(f / "stats.json"), "--study", str(f / STUDY)], 6),
    ("status", "study.json (Study.open)", lambda f: ["status", "--study", str(f / STUDY)], 4),
]  # 40 processes: ~0.3-1 s each


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_the_command_line_exits_cleanly_on_generated_inputs(ws, command):
    _, reader, args, examples = command
    target = BY_NAME[reader]
    valid = ws.valid(target)
    tally = Tally()

    @fuzz_settings(examples)
    @given(st.data())
    def one(data: Any) -> None:
        case = make_case(target, valid, HypothesisSource(data))
        # megabytes of YAML take the parser tens of seconds: the in-process cases time them, not these
        assume(len(case.data or b"") <= CLI_BYTES)
        tally.add(_cli(ws, case, args))

    one()
    if tally.failures:
        pytest.fail(_verdict(tally), pytrace=False)
