"""The SLURM executor: jobs and job arrays through submitit's SLURM executor, states from sacct and squeue."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import SlurmInfoWatcher

from . import CANCELLED, FAILED, FINISHED, PENDING, RUNNING, Job
from ._common import cancelled_mark, result_state
from .profile import SLURM_MAX_ARRAY_SIZE, ClusterProfile, load_cluster

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

    def __init__(self, profile: ClusterProfile | None = None) -> None:
        self.profile = profile or load_cluster(None)

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
            state = _SLURM_STATES.get(found, FAILED) if found else result_state(job_id, folder)
            if state in (CANCELLED, FAILED):  # SLURM itself cancels a job whose dependency failed
                state = CANCELLED if cancelled_mark(job_id, folder).exists() else FAILED
            out[job_id] = state
        return out

    def cancel(self, job_id: str, folder: Path) -> None:
        cancelled_mark(job_id, folder).touch()
        submitit.SlurmJob(folder, job_id).cancel(check=False)  # an array task alone, by its id
