"""Stage 3: row configs -> jobs. Decides what to submit, submits it, and reports each row's state.

A training is identified by its key (model + content hash of its config): rows with the same key,
in one plan or several, share one job. An evaluation-only row (same training, other test-time
settings) gets an evaluation job that starts once its training has ended. A key's state comes from
its work dir first (`done.json` is written last), then from the executor that ran its recorded job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .configs import RowConfig
from .executors import FAILED, FINISHED, PENDING, RUNNING, Executor, Job, executor_of_kind
from .study import Study, Submission
from .training import DONE_FILE, STARTED_FILE, EvalJob, TrainingJob

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
    train_key: str
    eval_only: bool
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

    def state_of(key: str) -> str:
        if key not in cache:
            cache[key] = key_state(study, key, subs.get(key), executor_for)
        return cache[key]

    out = []
    for r in rows:
        sub = subs.get(r.key)
        state = state_of(r.key)
        if r.eval_only and state == NEW and state_of(r.train_key) == FAILED:
            state = FAILED  # nothing to evaluate
        log = tail = None
        if sub is not None:
            log = _submitit_folder(study, r.key) / f"{sub.job_id}_0_log.err"
            if state == FAILED and log.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-TAIL_LINES:])
        out.append(RowState(r.plan, r.row, r.label, str(r.path), r.key, r.key.rsplit("-", 1)[1], r.train_key,
                            r.eval_only, state,
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
    """Submit every job that `rows` need and that is new (or failed, with retry_failed): each
    training once, then each evaluation-only job, after its training. Return the keys submitted.
    The caller holds `study.submitting()`. Each submission is recorded as soon as it is made, and a
    submission made by a `run` killed before recording it is adopted instead of being made twice."""
    wanted = {NEW, FAILED} if retry_failed else {NEW}
    subs = study.submissions()
    submitted: list[str] = []

    def state_of(key: str) -> str:
        return key_state(study, key, subs.get(key), executor_of_kind)

    def send(key: str, config: Path, job, after: Job | None = None) -> None:
        folder = _submitit_folder(study, key)
        orphan = _unrecorded_job(folder, subs.get(key))
        job_id = orphan or executor.submit(job, folder, f"sbrrepro-{key}", after)
        study.record(key, str(config), executor.kind, job_id)
        if orphan is None:
            submitted.append(key)

    trainings = {r.train_key: r.train_path for r in rows}
    for key, config in trainings.items():
        if state_of(key) in wanted:
            send(key, config, TrainingJob(str(config), str(study.run_dir(key))))
    subs = study.submissions()
    evaluations = {r.key: r for r in rows if r.eval_only}
    for key, r in evaluations.items():
        train_state = state_of(r.train_key)
        if train_state == FAILED or state_of(key) not in wanted:
            continue
        train = subs[r.train_key] if train_state != DONE else None
        after = (train.job_id, _submitit_folder(study, r.train_key)) if train else None
        send(key, r.path, EvalJob(str(r.path), str(study.run_dir(r.train_key)), str(study.run_dir(key))), after)
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
