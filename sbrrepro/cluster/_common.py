"""What both executors read of a job's submitit folder."""

from __future__ import annotations

from pathlib import Path

from submitit.core.utils import JobPaths, pickle_load

from . import FAILED, FINISHED


def cancelled_mark(job_id: str, folder: Path) -> Path:
    """Written by `cancel` before it stops the job: the job ended because sbrrepro cancelled it (not
    the cluster, e.g. for a dependency that failed)."""
    return folder / f"{job_id}_cancelled"


def result_state(job_id: str, folder: Path) -> str:
    """State from submitit's result pickle: a job that left none died without reporting."""
    result = JobPaths(folder, job_id, 0).result_pickle
    if not result.exists():
        return FAILED
    outcome, _ = pickle_load(result)
    return FINISHED if outcome == "success" else FAILED
