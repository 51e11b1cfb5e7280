"""Stage 3: row configs -> jobs. Decides what to submit, submits it, and reports each row's state.

A training is identified by its key (model + content hash of its config): rows with the same key
share one job. A key's state comes from its work dir first (`done.json` is written last), then from
the executor that ran its recorded job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .configs import RowConfig
from .executors import FAILED, FINISHED, PENDING, RUNNING, Executor, executor_of_kind
from .study import Study, Submission
from .training import DONE_FILE, STARTED_FILE, TrainingJob

# Row states, in the order a row goes through them.
NEW, DONE = "new", "done"
TAIL_LINES = 15


@dataclass(frozen=True)
class RowState:
    """One row's state, as `status --json` and `run --dry-run --json` print it."""

    plan: str
    row: int
    label: str
    config: str
    key: str
    hash: str
    state: str
    job_id: str | None = None
    executor: str | None = None
    log: str | None = None
    log_tail: str | None = None  # the end of a failed job's log

    def to_json(self) -> dict:
        return asdict(self)


def _submitit_folder(study: Study, key: str) -> Path:
    return study.run_dir(key) / "submitit"


def key_state(study: Study, key: str, submission, executor_for: Callable[[str], Executor]) -> str:
    run_dir = study.run_dir(key)
    if (run_dir / DONE_FILE).exists():
        return DONE
    if submission is None:
        return NEW
    state = executor_for(submission.executor).state(submission.job_id, _submitit_folder(study, key))
    if state == RUNNING and not (run_dir / STARTED_FILE).exists():
        return PENDING  # the job waits for a training slot
    if state == FINISHED:  # the job ended but wrote no done.json
        return FAILED
    return state


def states(study: Study, rows: list[RowConfig],
           executor_for: Callable[[str], Executor] = executor_of_kind) -> list[RowState]:
    subs = study.submissions()
    cache: dict[str, str] = {}
    out = []
    for r in rows:
        sub = subs.get(r.key)
        if r.key not in cache:
            cache[r.key] = key_state(study, r.key, sub, executor_for)
        log = tail = None
        if sub is not None:
            log = _submitit_folder(study, r.key) / f"{sub.job_id}_0_log.err"
            if cache[r.key] == FAILED and log.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-TAIL_LINES:])
        out.append(RowState(r.plan, r.row, r.label, str(r.path), r.key, r.key.rsplit("-", 1)[1], cache[r.key],
                            sub.job_id if sub else None, sub.executor if sub else None,
                            str(log) if log else None, tail))
    return out


def _unrecorded_job(folder: Path, recorded: Submission | None) -> str | None:
    """The id of a job that a killed `sbrrepro run` submitted but did not record: submitit leaves
    `<job id>_submitted.pkl` in the key's folder as soon as the job is submitted."""
    pickles = sorted(folder.glob("*_submitted.pkl"), key=lambda p: p.stat().st_mtime)
    if not pickles:
        return None
    newest = pickles[-1]
    if recorded is not None and (newest.stat().st_mtime <= recorded.submitted or
                                 newest.name.startswith(f"{recorded.job_id}_")):
        return None
    return newest.name.split("_", 1)[0]


def submit(study: Study, rows: list[RowConfig], executor: Executor, retry_failed: bool = False) -> list[str]:
    """Submit every training of `rows` that is new (or failed, with retry_failed); return the keys.
    The caller holds `study.submitting()`. Each submission is recorded as soon as it is made, and a
    submission made by a `run` killed before recording it is adopted instead of being made twice."""
    submitted: list[str] = []
    wanted = {NEW, FAILED} if retry_failed else {NEW}
    subs = study.submissions()
    for state in states(study, rows):
        if state.key in submitted or state.state not in wanted:
            continue
        folder = _submitit_folder(study, state.key)
        orphan = _unrecorded_job(folder, subs.get(state.key))
        if orphan is not None:
            study.record(state.key, state.config, executor.kind, orphan)
            continue
        job = TrainingJob(state.config, str(study.run_dir(state.key)))
        job_id = executor.submit(job, folder, f"sbrrepro-{state.key}")
        study.record(state.key, state.config, executor.kind, job_id)
        submitted.append(state.key)
    return submitted


def cancel(study: Study, rows: list[RowConfig]) -> list[str]:
    """Cancel the pending or running jobs of `rows`; return the keys cancelled."""
    subs = study.submissions()
    cancelled = []
    for state in states(study, rows):
        if state.key not in cancelled and state.state in (PENDING, RUNNING):
            sub = subs[state.key]
            executor_of_kind(sub.executor).cancel(sub.job_id, _submitit_folder(study, state.key))
            cancelled.append(state.key)
    return cancelled
