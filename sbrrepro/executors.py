"""How jobs run: one small protocol, two executors on submitit (this machine, or SLURM).

A cluster profile (YAML, see slurm/) chooses the executor and its resources. Without one, the local
executor runs on this machine: its GPUs if it has some (one task per GPU), else its CPU. On SLURM,
independent jobs can go out together as job arrays (`array_parallelism` of them running at once).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import submitit
from submitit.core.utils import JobPaths, pickle_load
from submitit.slurm.slurm import SlurmInfoWatcher

from .errors import UserError
from .reader import read_yaml
from .schema import Field, one_of, positive, validate

# Job states as sbrrepro reports them. CANCELLED: stopped by `cancel`, to be submitted again by `run`.
PENDING, RUNNING, FINISHED, FAILED, CANCELLED = "pending", "running", "finished", "failed", "cancelled"
STOP_S = 20  # how long a cancelled local job may take to be gone

# SLURM's default MaxArraySize: the most tasks of one array where the cluster does not say.
SLURM_MAX_ARRAY_SIZE = 1001

# Machine-wide, so that two studies on one machine share its cores too.
SLOTS_DIR = Path(tempfile.gettempdir()) / f"sbrrepro-slots-{os.getuid()}"

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _safe(v: str) -> str | None:
    return None if _SAFE.match(v) else f"{v!r}: use letters, digits, '.', '_' and '-' only"


def _safe_values(v: dict) -> str | None:
    for k, x in v.items():
        if not _SAFE.match(str(k)) or "\n" in str(x) or not isinstance(x, (str, int, float)):
            return f"sbatch parameter {k!r}={x!r}: names are letters, digits, '_' and '-'; values one line"
    return None


PROFILE_FIELDS = {
    "executor": Field(str, "local", one_of("local", "slurm")),
    "nodes": Field(int, 1, positive),
    "gpus_per_node": Field(int, None, help="local: defaults to the GPUs this machine has"),
    "tasks_per_node": Field(int, None, help="defaults to one task per GPU"),
    "cpus_per_task": Field(int, None, positive),
    "parallel": Field(int, None, positive, "local: trainings at once (default: 1 on GPUs, else up to 4 "
                      "single-threaded CPU trainings, one per core)"),
    "partition": Field(str, None, _safe),
    "account": Field(str, None, _safe),
    "qos": Field(str, None, _safe),
    "gpu_flag": Field(str, "gpus-per-node", one_of("gpus-per-node", "gres"),
                      "how the cluster takes GPU requests"),
    "time_min": Field(int, 7 * 24 * 60, positive, "time limit per job, in minutes"),
    "gpu_memory_GB": Field(float, None, positive, "memory of one GPU, which a training must fit in (`preflight`; "
                           "default: what the GPU reports)"),
    "setup": Field(("list", str), [], help="shell lines run before the job, e.g. activating the venv"),
    "weights": Field(str, None, help="a folder the compute nodes read where `run` stages the pretrained weights the "
                     "configs load (default: $SBRREPRO_WEIGHTS, else STUDY/weights)"),
    "sbatch": Field(dict, {}, _safe_values, "extra sbatch parameters"),
    "array_parallelism": Field(int, None, positive, "slurm: submit the trainings of a `run` as job arrays, "
                               "this many of them running at once (default: one job per training)"),
    "max_array_size": Field(int, None, positive, "slurm: the most tasks per array, more go out as several "
                            "arrays (default and upper bound: the cluster's MaxArraySize, else "
                            f"{SLURM_MAX_ARRAY_SIZE})"),
}


@dataclass(frozen=True)
class Profile:
    name: str
    values: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, item: str) -> Any:
        try:  # not self.values: while unpickling there is none yet, and asking for it would recurse
            return self.__dict__["values"][item]
        except KeyError:
            raise AttributeError(item) from None


def load_profile(spec: str | None) -> Profile:
    """`None`: this machine. Otherwise a YAML file, or the name of one in ./slurm/."""
    if spec is None:
        return Profile("local", validate({}, PROFILE_FIELDS, "local"))
    path = Path(spec)
    if not path.exists() and (Path("slurm") / f"{spec}.yaml").exists():
        path = Path("slurm") / f"{spec}.yaml"
    try:
        data = read_yaml(path, what="a YAML cluster profile")
    except OSError as e:
        raise UserError(spec, None, f"cannot read the cluster profile: {e.strerror}; pass a YAML file "
                        "or the name of one in slurm/") from None
    return Profile(path.stem, validate(data or {}, PROFILE_FIELDS, str(path)))


Job = tuple[str, Path]  # a submitted job: its id and its submitit folder


class Executor(Protocol):
    kind: str
    array_size: int  # the most independent jobs that go out together in one array (1: each on its own)

    def submit(self, job: Callable[[], Any], folder: Path, name: str, after: Job | None = None) -> str:
        """Submit `job`; with `after` (a job of this executor: id and folder), start it once that
        job has succeeded (if it fails, `job` fails without running)."""
        ...

    def submit_array(self, jobs: Sequence[Callable[[], Any]], folder: Path, name: str) -> list[str]:
        """Submit independent `jobs` together, all with their files in `folder`; return their ids
        in order. On SLURM one job array: the i-th job is task `<array id>_<i>` (a single job keeps
        a plain id)."""
        ...

    def state(self, job_id: str, folder: Path) -> str: ...

    def states(self, jobs: Sequence[Job]) -> dict[str, str]:
        """The state of each job by id, asked for together (one query, where the executor can)."""
        ...

    def cancel(self, job_id: str, folder: Path) -> None: ...


def _cancelled(job_id: str, folder: Path) -> Path:
    """Written by `cancel` before it stops the job: the job ended because sbrrepro cancelled it (not
    the cluster, e.g. for a dependency that failed)."""
    return folder / f"{job_id}_cancelled"


def _result_state(job_id: str, folder: Path) -> str:
    """State from submitit's result pickle: a job that left none died without reporting."""
    result = JobPaths(folder, job_id, 0).result_pickle
    if not result.exists():
        return FAILED
    outcome, _ = pickle_load(result)
    return FINISHED if outcome == "success" else FAILED


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

    def __init__(self, profile: Profile | None = None) -> None:
        self.profile = profile or load_profile(None)

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
            return _result_state(job_id, folder)
        if _cancelled(job_id, folder).exists():
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
        _cancelled(job_id, folder).touch()
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


_SLURM_STATES = {
    "PENDING": PENDING, "REQUEUED": PENDING, "CONFIGURING": PENDING, "RESIZING": PENDING,
    "RUNNING": RUNNING, "COMPLETING": RUNNING, "SUSPENDED": RUNNING,
    "COMPLETED": FINISHED, "CANCELLED": CANCELLED,
}


def _output(command: list[str]) -> str | None:
    """What a SLURM command printed; None where it failed or is not installed."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _sacct_states(job_ids: Sequence[str]) -> dict[str, str]:
    """Job states in SLURM's accounting (array tasks asked for by their own ids: submitit's watcher
    asks for whole arrays); none where accounting is off, none for jobs it has no record of yet, as
    the tasks of an array that waits as a whole."""
    out = _output(["sacct", "-X", "--parsable2", "-o", "JobID,State", "-j", ",".join(job_ids)])
    info = SlurmInfoWatcher().read_info(out) if out else {}
    states = {i: info.get(i, {}).get("State") for i in job_ids}
    return {i: state.split()[0] for i, state in states.items() if state}  # "CANCELLED by 0"


def _squeue_states() -> dict[str, str]:
    """The states of this user's queued jobs, one line per array task (`-r`), by job id."""
    out = _output(["squeue", "-h", "-r", "-u", str(os.getuid()), "-o", "%i %T"]) or ""
    return dict(line.split() for line in out.splitlines() if line.strip())


def cluster_max_array_size() -> int:
    """The cluster's MaxArraySize (0 where arrays are off), or SLURM's default where it does not say."""
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", _output(["scontrol", "show", "config"]) or "", re.M)
    return int(found.group(1)) if found else SLURM_MAX_ARRAY_SIZE


class SlurmExecutor:
    """Submits through submitit's SLURM executor: `nodes` x `tasks_per_node` tasks, one per GPU."""

    kind = "slurm"

    def __init__(self, profile: Profile | None = None) -> None:
        self.profile = profile or load_profile(None)

    @cached_property
    def array_size(self) -> int:
        if not self.profile.array_parallelism:
            return 1
        cluster = cluster_max_array_size()  # sbatch refuses larger arrays
        return max(1, min(self.profile.max_array_size or cluster, cluster))

    def parameters(self, name: str, after: Job | None = None) -> dict[str, Any]:
        """sbatch parameters of a job named `name`; with `after`, held until that job succeeds, and
        cancelled by SLURM if it fails (instead of waiting for ever on a dependency never met)."""
        p = self.profile
        gpus = p.gpus_per_node or 0
        params: dict[str, Any] = dict(
            job_name=name, nodes=p.nodes, ntasks_per_node=p.tasks_per_node or max(1, gpus),
            time=p.time_min, setup=list(p.setup), signal_delay_s=120,
            # one failed task ends the job, instead of leaving the others waiting for it
            srun_args=["--kill-on-bad-exit=1"],
        )
        for key in ("partition", "cpus_per_task", "account", "qos", "array_parallelism"):
            if getattr(p, key) is not None:
                params[key] = getattr(p, key)
        if gpus and p.gpu_flag == "gres":
            params["gres"] = f"gpu:{gpus}"
        elif gpus:
            params["gpus_per_node"] = gpus
        params["additional_parameters"] = dict(p.sbatch)
        if after:  # an array task's id (`<array>_<task>`) is a valid dependency too
            params["dependency"] = f"afterok:{after[0]}"
            params["additional_parameters"]["kill-on-invalid-dep"] = "yes"
        return params

    def _executor(self, folder: Path, name: str, after: Job | None = None) -> submitit.SlurmExecutor:
        ex = submitit.SlurmExecutor(folder=folder)
        ex.update_parameters(**self.parameters(name, after))
        return ex

    def submit(self, job: Callable[[], Any], folder: Path, name: str, after: Job | None = None) -> str:
        return self._executor(folder, name, after).submit(job).job_id

    def submit_array(self, jobs: Sequence[Callable[[], Any]], folder: Path, name: str) -> list[str]:
        return [j.job_id for j in self._executor(folder, name).submit_array(list(jobs))]

    def state(self, job_id: str, folder: Path) -> str:
        return self.states([(job_id, folder)])[job_id]

    def states(self, jobs: Sequence[Job]) -> dict[str, str]:
        """From sacct; where accounting is off or knows nothing yet, from squeue; once a job is gone
        from both, from its folder. One call of each, whatever the number of jobs."""
        raw = _sacct_states([job_id for job_id, _ in jobs])
        queued = _squeue_states() if len(raw) < len(jobs) else {}
        out = {}
        for job_id, folder in jobs:
            found = raw.get(job_id) or queued.get(job_id)
            # a job gone from both: its result pickle tells how it ended
            state = _SLURM_STATES.get(found, FAILED) if found else _result_state(job_id, folder)
            if state in (CANCELLED, FAILED):  # SLURM itself cancels a job whose dependency failed
                state = CANCELLED if _cancelled(job_id, folder).exists() else FAILED
            out[job_id] = state
        return out

    def cancel(self, job_id: str, folder: Path) -> None:
        _cancelled(job_id, folder).touch()
        submitit.SlurmJob(folder, job_id).cancel(check=False)  # an array task alone, by its id


def make_executor(profile: Profile) -> Executor:
    return (SlurmExecutor if profile.executor == "slurm" else LocalExecutor)(profile)


def executor_of_kind(kind: str) -> Executor:
    """An executor able to query and cancel jobs that one of this kind submitted."""
    return SlurmExecutor() if kind == "slurm" else LocalExecutor()
