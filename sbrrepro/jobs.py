"""Stage 3: row configs -> jobs. Decides what to submit, submits it, and reports each row's state.

A training is identified by its key (model + content hash of its config): rows with the same key,
in one plan or several, share one job. An evaluation-only row (same training, other test-time
settings) gets an evaluation job that starts once its training has succeeded. Trainings go out
together, as job arrays, where the executor makes arrays. A key's state comes from its work dir first
(`done.json` is written last), then from the executor that ran its recorded job, asked once for
all of its jobs.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .cluster import CANCELLED, FAILED, FINISHED, PENDING, RUNNING, Executor, Job, executor_of_kind
from .errors import UserError
from .files import atomic_write
from .layout import StudyPaths, sizes_key
from .results import lacks_sizes, recorded_coco
from .rows import AWAITING, DONE, NEW, RowConfig
from .study import Study, Submission
from .study_files import KEY, read
from .training import EvalJob, TrainingJob

ENDED = (DONE, AWAITING, FAILED, CANCELLED)  # what no longer changes by itself
TAIL_LINES = 15
SUBMITTED = "_submitted.pkl"  # submitit writes <job id>_submitted.pkl as soon as it has submitted a job


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
    uploads: tuple[str, ...] = ()  # awaiting the server: the files to upload to it
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def key_states(study: Study, keys: Iterable[str]) -> dict[str, str]:
    """Each key's state: from its work dir, else from the executor of its recorded job, which is
    asked once for all of its jobs (on SLURM one sacct call, not one per key)."""
    subs = study.submissions()
    out, asked = {}, defaultdict(list)
    for key in set(keys):
        run = study.paths.run(key)
        if run.done.exists():
            out[key] = AWAITING if run.uploads() and not run.server_stats.exists() else DONE
        elif key not in subs:
            out[key] = NEW
        else:
            asked[subs[key].executor].append(key)
    for kind, kind_keys in asked.items():
        found = executor_of_kind(kind).states([(subs[k].job_id, subs[k].folder) for k in kind_keys])
        for key in kind_keys:
            state = found[subs[key].job_id]
            if state == RUNNING and not study.paths.run(key).started.exists():
                state = PENDING  # the job waits for a training slot
            out[key] = FAILED if state == FINISHED else state  # FINISHED: ended but wrote no done.json
    return out


def states(study: Study, rows: list[RowConfig]) -> list[RowState]:
    subs = study.submissions()
    resized = [sizes_key(r.key) for r in rows if sizes_key(r.key) in subs]
    known = key_states(study, [r.key for r in rows] + [r.train_key for r in rows if r.eval_only] + resized)

    out = []
    for r in rows:
        sub = subs.get(r.key)
        state = known[r.key]
        if state == DONE and known.get(sizes_key(r.key)) in (PENDING, RUNNING):
            # finished before both mask-size conventions were computed, and evaluated again for them:
            # its numbers are final once that evaluation is done
            sub = subs[sizes_key(r.key)]
            state = known[sub.key]
        if r.eval_only and state == NEW and known[r.train_key] == FAILED:
            state = FAILED  # nothing to evaluate
        log = tail = None
        if sub is not None:
            log = sub.folder / f"{sub.job_id}_0_log.err"
            if state == FAILED and log.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-TAIL_LINES:])
        uploads = tuple(map(str, study.paths.run(r.key).uploads())) if state == AWAITING else ()
        out.append(RowState(r.plan, r.row, r.label, str(r.path), r.key, r.key.rsplit("-", 1)[1], r.train_key,
                            r.eval_only, state,
                            sub.job_id if sub else None, sub.executor if sub else None,
                            str(log) if log else None, tail, uploads, r.seed))
    return out


@dataclass(frozen=True)
class Trace:
    """A submission that left its job pickle in a submitit folder, recorded or not."""

    job_id: str
    folder: Path
    time: float  # when the pickle was written: just before the submission, so before its record


def _pickles(folder: Path) -> list[Trace]:
    return [Trace(p.name.removesuffix(SUBMITTED), folder, p.stat().st_mtime) for p in folder.glob("*" + SUBMITTED)]


def traces(study: Study, keys: Iterable[str]) -> dict[str, list[Trace]]:
    """Every submission made for each of `keys`: a job of its own in the key's folder, or a task of
    an array whose folder lists the key (task i runs the i-th key)."""
    found = {key: _pickles(study.paths.run(key).submitit) for key in keys}
    for manifest in map(StudyPaths.manifest, study.paths.arrays.glob("*/")):
        if not manifest.exists():
            continue
        fix = ("restore it, or move the array's folder aside (its jobs, if any still run, are then not known: "
               "cancel them by their ids, e.g. SLURM's scancel)")
        tasks = read(manifest, [KEY, ...], "the keys of the array's tasks, in task order", fix)
        for trace in _pickles(manifest.parent):
            task = trace.job_id.rpartition("_")[2]  # an array task's id is <array id>_<task>
            if not (task.isascii() and task.isdigit() and int(task) < len(tasks)):
                raise UserError(str(manifest), None, f"lists {len(tasks)} task(s), not job {trace.job_id}'s; {fix}")
            if tasks[int(task)] in found:
                found[tasks[int(task)]].append(trace)
    return found


def _unrecorded(found: list[Trace], recorded: Submission | None) -> Trace | None:
    """The submission that a killed `sbrrepro run` made but did not record: the newest one, where
    it is newer than the recorded one."""
    newest = max(found, key=lambda t: t.time, default=None)
    if newest is None or recorded is not None and (
            newest.time <= recorded.submitted or (newest.job_id, newest.folder) == (recorded.job_id, recorded.folder)):
        return None
    return newest


def _new_array_folder(study: Study, keys: list[str]) -> Path:
    """A fresh folder for one array, listing its keys before it is submitted: tasks that a killed
    `run` did not record are found there by their index."""
    folder = study.paths.arrays / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    atomic_write(StudyPaths.manifest(folder), json.dumps(keys))
    return folder


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _to_submit(retry_failed: bool) -> set[str]:
    """The states whose jobs `run` submits: new and cancelled ones, and with retry_failed failed ones."""
    return {NEW, CANCELLED, FAILED} if retry_failed else {NEW, CANCELLED}


def submit(study: Study, rows: list[RowConfig], executor: Executor, retry_failed: bool = False) -> list[str]:
    """Submit every job that `rows` need and that is new or cancelled (or failed, with retry_failed): each
    training once, together as arrays of at most `executor.array_size`, then each evaluation-only
    job alone, after its training. Return the keys submitted. The caller holds
    `study.submitting()`. Submissions are recorded as soon as they are made, and a submission made
    by a `run` killed before recording it is adopted instead of being made twice."""
    wanted = _to_submit(retry_failed)
    subs = study.submissions()
    keys = {r.key for r in rows} | {r.train_key for r in rows}
    found, known = traces(study, keys), key_states(study, keys)
    submitted: list[str] = []

    def to_send(key: str, config: Path) -> bool:
        """Whether `key` needs a submission; one left unrecorded is recorded instead."""
        if known[key] not in wanted:
            return False
        orphan = _unrecorded(found[key], subs.get(key))
        if orphan is not None:
            study.record(executor.kind, [(key, str(config), orphan.job_id, orphan.folder)])
        return orphan is None

    def send(batch: list[tuple[str, Path, Callable[[], Any]]], after: Job | None = None) -> None:
        """Submit `batch` (key, config, job): one job alone in its key's folder, more as an array."""
        if len(batch) == 1:
            ((key, _, job),) = batch
            folder = study.paths.run(key).submitit
            ids = [executor.submit(job, folder, f"sbrrepro-{key}", after)]
        else:
            folder = _new_array_folder(study, [key for key, _, _ in batch])
            ids = executor.submit_array([job for _, _, job in batch], folder, f"sbrrepro-array-{folder.name}")
        study.record(executor.kind, [(key, str(config), i, folder) for (key, config, _), i in zip(batch, ids)])
        submitted.extend(key for key, _, _ in batch)

    trainings = {r.train_key: r.train_path for r in rows}
    ready = [(key, config, TrainingJob(str(config), str(study.paths.run(key).root)))
             for key, config in trainings.items() if to_send(key, config)]
    for batch in _chunks(ready, executor.array_size):
        send(batch)
    subs = study.submissions()
    evaluations = {r.key: r for r in rows if r.eval_only}
    for key, r in evaluations.items():
        train_state = PENDING if r.train_key in submitted else known[r.train_key]
        if train_state == FAILED or not to_send(key, r.path):
            continue
        train = subs[r.train_key] if train_state != DONE else None
        job = EvalJob(str(r.path), str(study.paths.run(r.train_key).root), str(study.paths.run(key).root))
        send([(key, r.path, job)], (train.job_id, train.folder) if train else None)
    resize = _unsized(study, rows, known)
    known.update(key_states(study, resize))
    found.update(traces(study, resize))
    for key, r in resize.items():
        if to_send(key, r.path):
            send([(key, r.path, EvalJob(str(r.path), str(study.paths.run(r.train_key).root),
                                        str(study.paths.run(key).root)))])
    return submitted


def _unsized(study: Study, rows: list[RowConfig], known: dict[str, str]) -> dict[str, RowConfig]:
    """The finished runs of `rows` whose masks were scored before the mask AP_S/M/L were computed under
    both size conventions (box and mask area), by the key of the evaluation that gives them both: their
    final checkpoint evaluated again with the row's config (`EvalJob`), never a retraining."""
    out: dict[str, RowConfig] = {}
    for r in rows:
        key = sizes_key(r.key)
        if (known.get(r.key) == DONE and key not in out and not study.paths.run(key).done.exists()
                and lacks_sizes(recorded_coco(study.paths.run(r.key), r.eval_only))):
            out[key] = r
    return out


def would_submit(study: Study, rows: list[RowConfig], retry_failed: bool = False) -> set[str]:
    """The keys `submit` would send now: the rows' and the trainings that evaluation-only rows need."""
    redo = _to_submit(retry_failed)
    found = states(study, rows)
    todo = {s.key for s in found if s.state in redo}  # an evaluation of a failed training: failed
    resize = _unsized(study, rows, {s.key: s.state for s in found})
    return todo | {key for key, state in key_states(study, {r.train_key for r in rows} | set(resize)).items()
                   if state in redo}


def cancel(study: Study, rows: list[RowConfig]) -> list[str]:
    """Cancel the pending or running jobs of `rows`; return the keys cancelled."""
    subs = study.submissions()
    cancelled = []
    for state in states(study, rows):
        if state.key not in cancelled and state.state in (PENDING, RUNNING):
            sub = subs[state.key]
            if (resized := subs.get(sizes_key(state.key))) is not None and resized.job_id == state.job_id:
                sub = resized  # the evaluation that gives a finished run both mask-size conventions
            executor_of_kind(sub.executor).cancel(sub.job_id, sub.folder)  # an array's task alone
            cancelled.append(state.key)
    return cancelled
