"""The local executor: jobs on this machine through submitit's local executor, queued on training slots."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import JobPaths

from . import CANCELLED, FAILED, FINISHED, RUNNING, Job
from ._common import cancelled_mark, result_state
from .profile import ClusterProfile, load_cluster

STOP_S = 20  # how long a cancelled local job may take to be gone

# Machine-wide, so that two studies on one machine share its cores too.
SLOTS_DIR = Path(tempfile.gettempdir()) / f"sbrrepro-slots-{os.getuid()}"


class _Slot:
    """At most `count` trainings at once on a machine shared by a local study: a job holds one of
    `count` file locks while it trains (the lock is released by the OS if the job dies)."""

    def __init__(self, folder: Path, count: int) -> None:
        self.folder, self.count, self.handle = folder, count, None

    def __enter__(self) -> _Slot:
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            for k in range(self.count):
                handle = open(self.folder / f"slot{k}.lock", "w")  # noqa: SIM115 (held while training)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self.handle = handle
                    return self
                except OSError:
                    handle.close()
            time.sleep(2)

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


class Queued(submitit.helpers.Checkpointable):
    """Runs `fn` once the local job `after` (id, folder) has succeeded and it holds one of `slots`
    training slots of this machine, with `threads` CPU threads (None: torch's default). Requeued
    as a whole when `fn` is Checkpointable."""

    def __init__(self, fn: Callable[[], Any], slot_dir: Path, slots: int, threads: int | None,
                 after: Job | None = None) -> None:
        self.fn, self.slot_dir, self.slots, self.threads, self.after = fn, slot_dir, slots, threads, after

    def __call__(self) -> Any:
        while self.after and LocalExecutor().state(*self.after) == RUNNING:  # holds no slot meanwhile
            time.sleep(2)
        if self.after and (state := LocalExecutor().state(*self.after)) != FINISHED:  # as SLURM's afterok
            raise RuntimeError(f"not run: job {self.after[0]}, which it waits for, {state}")
        with _Slot(self.slot_dir, self.slots):
            if self.threads:  # torch only once a slot is held: the jobs that wait stay small
                import torch

                torch.set_num_threads(self.threads)
            return self.fn()


@contextlib.contextmanager
def _standard_streams_closed() -> Iterator[None]:
    """While inside, this process's standard streams are /dev/null, so that a job controller it
    starts keeps none of them: a pipe (`sbrrepro run | tee log`) or a captured `run` then ends with
    `run`, not with the last of its jobs. The jobs write their own log files."""
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_RDWR)
    saved = {}
    try:
        for fd in (0, 1, 2):
            with contextlib.suppress(OSError):  # a stream that is closed already (no stdin) stays so
                saved[fd] = os.dup(fd)
                os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


class LocalExecutor:
    """Runs jobs on this machine through submitit's local executor (jobs outlive `sbrrepro run`).
    Trainings queue on `parallel` slots, so a CPU machine is not oversubscribed."""

    kind = "local"
    array_size = 1  # the slots already bound how many trainings run at once

    def __init__(self, profile: ClusterProfile | None = None) -> None:
        self.profile = profile or load_cluster(None)

    def _gpus(self) -> int:
        if self.profile.gpus_per_node is not None:
            return self.profile.gpus_per_node
        import torch

        return torch.cuda.device_count()

    def submit(self, job: Callable[[], Any], folder: Path, name: str, after: Job | None = None) -> str:
        gpus = self._gpus()
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=self.profile.time_min, gpus_per_node=gpus,
                             tasks_per_node=self.profile.tasks_per_node or max(1, gpus))
        cores = os.cpu_count() or 1
        # One CPU training per core beats one training on all cores: MMCV's CPU RoIAlign is serial.
        parallel = self.profile.parallel or (1 if gpus else min(4, cores))
        threads = None if gpus else max(1, cores // parallel)
        with _standard_streams_closed():
            return ex.submit(Queued(job, SLOTS_DIR, parallel, threads, after)).job_id

    def submit_array(self, jobs: Sequence[Callable[[], Any]], folder: Path, name: str) -> list[str]:
        return [self.submit(job, folder, name) for job in jobs]

    def _alive(self, job_id: str, folder: Path) -> bool:
        """Whether the job's controller runs. The job id is the pid of submitit's controller: make
        sure that pid is still that process (its command line names the job folder, or right after
        the fork it has not exec'd yet)."""
        try:
            alive = Path(f"/proc/{job_id}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            cmdline = Path(f"/proc/{job_id}/cmdline").read_bytes()
        except OSError:
            return False
        young = time.time() - JobPaths(folder, job_id, 0).submitted_pickle.stat().st_mtime < 60
        return alive and (str(folder).encode() in cmdline or young)

    def state(self, job_id: str, folder: Path) -> str:
        if JobPaths(folder, job_id, 0).result_pickle.exists():
            return result_state(job_id, folder)
        if cancelled_mark(job_id, folder).exists():
            return CANCELLED
        return RUNNING if self._alive(job_id, folder) else FAILED

    def states(self, jobs: Sequence[Job]) -> dict[str, str]:
        return {job_id: self.state(job_id, folder) for job_id, folder in jobs}  # from files: no query to save

    def cancel(self, job_id: str, folder: Path) -> None:
        """Stop the job's controller and every process under it (tasks, their workers) at once.
        Not with SIGINT, as submitit does: a job started by a non-interactive shell (a script, a
        batch job) ignores it; and SIGTERM is what submitit's tasks ignore on purpose. Checkpoints
        already written stay, so a later run resumes."""
        if self.state(job_id, folder) != RUNNING:
            return
        cancelled_mark(job_id, folder).touch()
        # Stop the whole tree first (a stopped process starts nothing, and none of them gets to
        # run a line more, e.g. write a result), until no new process appears; then kill it.
        tree: list[int] = []
        while new := [pid for pid in [int(job_id), *_descendants(int(job_id))] if pid not in tree]:
            for pid in new:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            tree += new
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.time() + STOP_S
        while any(_running(pid) for pid in tree) and time.time() < deadline:
            time.sleep(0.1)


def _children() -> dict[int, list[int]]:
    """This machine's processes by parent pid."""
    found: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            found.setdefault(parent, []).append(int(stat.parent.name))
    return found


def _descendants(pid: int) -> list[int]:
    """Every process under `pid`, parents before their children."""
    children, out, todo = _children(), [], [pid]
    while todo:
        kids = children.get(todo.pop(0), [])
        out += kids
        todo += kids
    return out


def _running(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
