"""The terminal's views of a study: a line per row and seed (or JSON), the dry run's report with its
costs, the wait loop's changes and progress line, and what `collect` wrote. They print; they decide
nothing.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from . import jobs
from .progress import epoch, fit, summary
from .rows import CITED, RowConfig
from .study import Study


def shell_path(path: Path) -> str:
    """`path` as a user would type it here: relative to the working folder where it lies inside it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _width() -> int:
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else 10**6


def _unrun(plan: Any, row: Any) -> dict:
    """A cited or derived row, as `status` and the dry run show it."""
    if row.kind == CITED:
        return {"plan": plan.name, "row": row.number, "label": row.label, "state": CITED, "cited": row.cited}
    return {"plan": plan.name, "row": row.number, "label": row.label, "state": row.kind,
            "derived": f"row {row.derived[0]} - row {row.derived[1]}"}


def epochs(study: Study, states: list[jobs.RowState]) -> dict[str, str]:
    """The epoch each running training has reached, by key."""
    return {s.key: e for s in states if s.state == jobs.RUNNING
            and (e := epoch(study.paths.run(s.train_key), Path(s.config))) is not None}


def states(states: list[jobs.RowState], as_json: bool, todo: set[str] | None = None, plans: list | None = None,
           epochs: dict[str, str] | None = None) -> None:
    """A line per row and seed, or with as_json a JSON list; `todo` (dry run) marks what would be
    submitted; the cited and derived rows of `plans` are shown after the rows with jobs. On a
    terminal each line is cut to its width."""
    others = [_unrun(plan, row) for plan in plans or [] for row in plan.unrun_rows]
    if as_json:
        extra = (lambda s: {"would_submit": s.key in todo}) if todo is not None else (lambda s: {})
        print(json.dumps([{**s.to_json(), **extra(s)} for s in states] + others, indent=1))
        return
    width = _width()
    label_width = max(map(len, [*(s.label for s in states), *(o["label"] for o in others)]), default=5)
    key_width = max((len(s.key) for s in states), default=0)
    seeded = len({s.seed for s in states}) > 1
    epochs = epochs or {}
    for s in states:
        job = f"{s.executor} job {s.job_id}" if s.job_id else ""
        shared = f"evaluates {s.train_key}" if s.eval_only else ""
        seed = f"seed {s.seed:<3}" if seeded else ""
        state = f"{s.state} ({epochs[s.key]})" if s.key in epochs else s.state
        print(fit(f"{s.plan:<18} row {s.row:<3} {seed}{s.label:<{label_width}}  {state:<8} {s.key:<{key_width}} "
                  f"{job:<18} {shared}".rstrip(), width))
        for upload in s.uploads:
            print(f"    for the evaluation server: {upload}")
        if s.log_tail:
            print(f"    {s.log}:\n" + "\n".join("    | " + line for line in s.log_tail.splitlines()))
    for o in others:
        print(fit(f"{o['plan']:<18} row {o['row']:<3} {o['label']:<{label_width}}  {o['state']:<8} "
                  f"{o.get('cited') or o['derived']}", width))
    if todo is None and states:
        print(fit(summary(states, epochs), width))


def dry_run(prepared: Any, profile: Any, todo: set[str]) -> None:
    """What `run --dry-run` found: the rows, the unique trainings, what would be submitted, the rows
    that need no job, the cost, and the weights `run` would fetch."""
    from .costs import summarize

    rows = [rc for _, rc in prepared.chosen]
    s, costs = summarize(prepared.chosen, prepared.study.paths, prepared.study.scale, profile.time_min)
    print(f"dry run: {s.rows} row(s), {s.trainings} unique training(s), {s.evaluations} "
          f"evaluation-only job(s); would submit {len(todo)} job(s); nothing submitted")
    if prepared.whole and (counted := len(prepared.rows) - len(rows)):
        print(f"{counted} row(s) need no job: their numbers are counted or computed "
              "(`sbrrepro params`, `sbrrepro collect`)")
    unrun = [row for plan in prepared.plans for row in plan.unrun_rows] if prepared.whole else []
    if unrun:
        cited = sum(row.kind == CITED for row in unrun)
        print(f"{cited} cited row(s) (another paper's published numbers, no verdict) and "
              f"{len(unrun) - cited} derived line(s) (computed from other rows by `sbrrepro collect`): no job")
    _costs(s, costs, prepared.study.scale, profile)
    if missing := sorted(u for u, p in prepared.weights.items() if not p.exists()):
        print(f"weights `run` will fetch into {shell_path(next(iter(prepared.weights.values())).parent)} "
              f"before submitting: {', '.join(missing)}")


def _costs(s: Any, costs: dict, scale: str, profile: Any) -> None:
    """The cost of what a dry run would submit: in all, and per training with its basis."""
    from .costs import PAPER
    from .zoo import COST_BASIS

    if s.hours is None:
        print("cost: unknown until measured (`collect` measures finished runs)")
        return
    unit = "GPU-hours" if scale == "full" else "process-hours"
    print(f"cost: {s.hours:.1f} {unit} for the unique trainings; one training per row would take "
          f"{s.hours_one_per_row:.1f} (saved: {s.hours_one_per_row - s.hours:.1f})")
    if scale != "full":
        return
    requeues = sum(c.requeues for c in costs.values())
    print(f"checkpoints: at most {s.checkpoint_GB:.1f} GB on disk (each training keeps its last, and writes the next "
          f"beside it); requeues under {profile.name}'s {profile.time_min} min limit: {requeues} in all")
    for key, c in costs.items():
        print(f"  {key:<28} {c.hours:8.1f} {unit}  {c.checkpoint_GB:5.2f} GB  {c.requeues} requeue(s)  ({c.basis})")
    if any(c.basis.startswith(PAPER) for c in costs.values()):
        print(f"{PAPER}: {COST_BASIS}")


def wait(study: Study, rows: list[RowConfig], poll_s: float = 5.0) -> int:
    """Wait for every row; print each change of a job's state as a line. On a terminal, a progress
    line (rows done of rows, the epoch of each running training) is redrawn in place under them."""
    tty = sys.stdout.isatty()
    seen: dict[str, str] = {}
    while True:
        now = jobs.states(study, rows)
        changes = []
        for s in now:
            if seen.get(s.key) != s.state:
                seen[s.key] = s.state
                changes.append(f"{time.strftime('%H:%M:%S')} {s.key}: {s.state}")
        if tty:
            sys.stdout.write("\r\033[K")  # the progress line goes, the changes print above its next one
        for line in changes:
            print(line, flush=True)
        if all(s.state in jobs.ENDED for s in now):
            for s in now:
                if s.state == jobs.AWAITING:
                    print(f"{s.plan} row {s.row} awaits the evaluation server: upload {', '.join(s.uploads)}, then "
                          f"`sbrrepro import-stats {s.plan}:{s.row} STATS.json`")
            failed = [s for s in now if s.state in (jobs.FAILED, jobs.CANCELLED)]
            for s in failed:
                print(f"{s.state}: {s.plan} row {s.row} ({s.key}); log: {s.log}", file=sys.stderr)
            return 1 if failed else 0
        if tty:
            sys.stdout.write(fit(summary(now, epochs(study, now)), shutil.get_terminal_size().columns))
            sys.stdout.flush()
        time.sleep(poll_s)


def preflight(found: list, heading: str | None = None) -> None:
    """Each training's preflight finding, a line each (under `heading`, indented)."""
    if heading:
        print(heading)
    for f in found:
        print(f"{'  ' if heading else ''}{f.key} ({', '.join(f.rows)}): {f.line()}")


def collected(study: Study, done: Any, tables: bool = False) -> None:
    """What `collect` wrote; with `tables`, each table first, as the terminal draws it."""
    if tables:
        from .render import to_terminal

        tty = sys.stdout.isatty()
        for table in done.tables.values():
            print(to_terminal(table, shutil.get_terminal_size().columns if tty else None, styled=tty), end="\n\n")
    print(f"results: {done.results} ({study.paths.results_csv.name}, {study.paths.results_parquet.name} beside it)")
    for path in done.reports:
        print(f"table: {path}")
    for path in done.figures:
        print(f"figure: {path}")
    for plan, why in done.not_drawn.items():
        print(f"figure {plan}: not drawn yet: {why}")
