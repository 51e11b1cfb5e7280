"""Where jobs run: one small protocol, two executors on submitit (this machine, or SLURM).

A cluster profile (YAML, see slurm/; `profile.py`) chooses the executor and its resources. Without
one, the local executor (`local.py`) runs on this machine: its GPUs if it has some (one task per
GPU), else its CPU. On SLURM (`slurm.py`), independent jobs can go out together as job arrays
(`array_parallelism` of them running at once). This module holds what callers need without either
backend: the protocol, the job states, and the two ways to get an executor (which import their
backend, and submitit, only when called).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..rows import CANCELLED, FAILED, PENDING, RUNNING  # noqa: F401  (the states callers import from here)

if TYPE_CHECKING:
    from .profile import ClusterProfile

# A job's states: a row's (see sbrrepro.rows), and FINISHED, which the row's files turn into DONE.
FINISHED = "finished"

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


def make_executor(profile: ClusterProfile) -> Executor:
    """The executor the profile chooses, with its resources."""
    if profile.executor == "slurm":
        from .slurm import SlurmExecutor

        return SlurmExecutor(profile)
    from .local import LocalExecutor

    return LocalExecutor(profile)


def executor_of_kind(kind: str) -> Executor:
    """An executor able to query and cancel jobs that one of this kind submitted."""
    if kind == "slurm":
        from .slurm import SlurmExecutor

        return SlurmExecutor()
    from .local import LocalExecutor

    return LocalExecutor()
