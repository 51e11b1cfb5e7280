"""`sbrrepro doctor`: before the first run on a cluster, check on the nodes themselves what every
training needs, through the executor `run` uses: one job on one node and one on two nodes (the local
executor: one job here). Each task reports its node, torch and CUDA, its GPU, whether mmcv's
compiled ops and the deformable RoI pooling give the values computed by hand on its device, an
all-reduce over the job's tasks (NCCL on GPUs, gloo on CPUs), and whether the data root and the
weights cache are readable there. The command line prints one table of it (see `render`).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, JobPaths, pickle_load

from .cluster import CANCELLED, FAILED, FINISHED, Executor, make_executor
from .cluster.profile import load_cluster
from .errors import UserError
from .training import _distributed_env
from .weights import ENV

OK, NA = "ok", "n/a"
NOT_REPORTED = "-"
JOB_MIN = 10  # a doctor job's time limit: a short job starts sooner on a busy cluster (backfill)
JOIN_S = 120  # how long a task waits for the job's other tasks to join the all-reduce
POLL_S = 2.0
ENDED = (FINISHED, FAILED, CANCELLED)


class CheckFailed(Exception):
    """A check found something wrong (not a crash): its message is the table's reason."""


def _outcome(check: Callable[[], str | None]) -> str:
    """The check's cell: 'ok' (it returned None), its value (an information or n/a), or 'FAIL: reason'
    on one line; any exception is a failure of that check only, so the task still reports the others."""
    try:
        return check() or OK
    except CheckFailed as e:
        reason = str(e)
    except Exception as e:
        reason = f"{type(e).__name__}: {e}"
    return "FAIL: " + " ".join(reason.split())[:200]


def _device() -> Any:
    """This task's device: its own GPU (by local rank, as the training's launcher pins them), else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cuda", torch.cuda.current_device())


def _gpu(expected: int) -> str:
    import torch

    found = torch.cuda.device_count()
    if found < expected:
        raise CheckFailed(f"{found} GPU(s) visible, the profile asks for {expected} per node")
    if not found:
        return "none"
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return f"{found} x {props.name}, {props.total_memory / 2**30:.0f} GiB"


def _mmcv() -> str:
    import mmcv
    from mmcv.ops import get_compiling_cuda_version

    cuda = get_compiling_cuda_version()  # 'not available' where the ops were built without CUDA
    return f"{mmcv.__version__}, ops built " + ("without CUDA" if "not available" in cuda else f"with CUDA {cuda}")


def _constant(what: str, out: Any, value: float, shape: tuple[int, ...]) -> None:
    """Pooling a constant map gives that constant: anything else is a broken kernel."""
    import torch

    if tuple(out.shape) != shape or not torch.allclose(out, torch.full_like(out, value)):
        raise CheckFailed(f"{what} of a constant map of {value} gave {out.flatten()[:4].tolist()} "
                          f"of shape {tuple(out.shape)}, not {value} of shape {shape}")


def _mmcv_ops(device: Any) -> None:
    """mmcv's compiled RoIAlign and nms on the task's device (a CPU-only build fails on a GPU)."""
    import torch
    from mmcv.ops import RoIAlign, nms

    feats = torch.full((1, 2, 8, 8), 3.0, device=device)
    rois = torch.tensor([[0.0, 1.0, 1.0, 6.0, 6.0]], device=device)
    _constant("RoIAlign", RoIAlign((2, 2), 1.0, 2, aligned=True)(feats, rois), 3.0, (1, 2, 2, 2))
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float32, device=device)
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device=device), iou_threshold=0.5)
    if keep.tolist() != [0, 2]:
        raise CheckFailed(f"nms of two identical boxes and one apart kept {keep.tolist()}, not [0, 2]")


def _deform_pool(device: Any) -> None:
    """The deformable RoI pooling CoMask trains with: mmcv's kernel on CUDA, sbrrepro's op on a CPU."""
    import torch

    from .models.comask.deform_roi_pool import deform_roi_pool

    feats = torch.full((1, 2, 8, 8), 3.0, device=device)
    rois = torch.tensor([[0.0, 2.0, 2.0, 6.0, 6.0]], device=device)
    offset = torch.full((1, 2, 2, 2), 0.5, device=device)  # bins moved by 0.2 px: still inside the map
    out = deform_roi_pool(feats, rois, offset, 2, spatial_scale=1.0, sampling_ratio=2, gamma=0.1)
    _constant("deform_roi_pool", out, 3.0, (1, 2, 2, 2))


def _all_reduce(device: Any, backend: str, distributed: bool) -> None:
    """Each task adds rank + 1: the sum over W tasks is W(W+1)/2."""
    import torch
    import torch.distributed as dist

    timeout = timedelta(seconds=JOIN_S)
    if distributed:  # the variables `_distributed_env` exported, as a training's
        dist.init_process_group(backend, timeout=timeout)
    else:  # a single task: a group of one still starts the backend on the device
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    try:
        world = dist.get_world_size()
        total = torch.tensor([dist.get_rank() + 1.0], device=device)
        dist.all_reduce(total)
        if total.item() != world * (world + 1) / 2:
            raise CheckFailed(f"the sum over {world} tasks is {total.item()}, not {world * (world + 1) / 2}")
    finally:
        dist.destroy_process_group()


def _readable(path: str | None) -> str | None:
    if path is None:
        return NA
    try:
        os.listdir(path)
    except OSError as e:
        raise CheckFailed(f"{path}: {e.strerror}") from None
    return None


@dataclass(frozen=True)
class DoctorJob:
    """What each task of a doctor job checks on its node (picklable: submitit runs it): the table's
    row labels and this task's cells."""

    data_root: str
    weights: str | None
    gpus_per_node: int  # the profile's: fewer visible is a failure

    def __call__(self) -> dict[str, str]:
        import torch

        distributed = _distributed_env(submitit.JobEnvironment().job_id)  # a port of the job's own
        device = _device()
        backend = "nccl" if device.type == "cuda" else "gloo"
        return {
            "nodes": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
            "tasks": os.environ.get("WORLD_SIZE", "1"),
            "torch / its CUDA": f"{torch.__version__} / {torch.version.cuda or 'none'}",
            "GPU": _outcome(lambda: _gpu(self.gpus_per_node)),
            "mmcv": _outcome(_mmcv),
            "mmcv ops (RoIAlign, nms)": _outcome(lambda: _mmcv_ops(device)),
            "deformable RoI pooling": _outcome(lambda: _deform_pool(device)),
            f"all-reduce ({backend})": _outcome(lambda: _all_reduce(device, backend, distributed)),
            "data root readable": _outcome(lambda: _readable(self.data_root)),
            "weights cache readable": _outcome(lambda: _readable(self.weights)),
        }


@dataclass
class Column:
    """One job's column of the table: its title and its cells by row label."""

    title: str
    cells: dict[str, str]
    missing: str = NOT_REPORTED  # the cell of a row no task reported

    def cell(self, label: str) -> str:
        return self.cells.get(label, self.missing)


@dataclass(frozen=True)
class Submitted:
    title: str
    job_id: str
    folder: Path


@dataclass
class Checkup:
    """The doctor's jobs in table order: each submitted, or already a column (n/a, refused)."""

    executor: Executor
    jobs: list[Submitted | Column]
    data_root: str
    weights: str | None

    @property
    def submitted(self) -> list[Submitted]:
        return [j for j in self.jobs if isinstance(j, Submitted)]

    def line(self) -> str:
        jobs = " and ".join(f"{j.title} {j.job_id}" for j in self.submitted)
        return (f"submitted {jobs} ({self.executor.kind}), logs in {self.submitted[0].folder.parent}; data root "
                f"{self.data_root}, weights cache {self.weights or 'not given'}")


def _given_folder(option: str, path: str | None) -> str | None:
    """A folder named on the command line must be there (here at least): a typo is bad input."""
    if path is not None and not Path(path).is_dir():
        raise UserError("command line", option, f"{path}: no such folder")
    return path


def _refusal(e: Exception) -> str:
    """sbatch's refusal on one line."""
    lines = [line.removeprefix("sbatch: error: ").strip() for line in str(e).splitlines()]
    return "; ".join(line for line in lines if line) or type(e).__name__


def submit(cluster: str | None, data_root: str | None, weights: str | None, folder: Path) -> Checkup:
    """Submit the doctor's jobs: on SLURM a job on one node and one on two nodes (the profile's tasks
    per node, GPUs and set-up lines, a short time limit), locally one job."""
    from .prepare import scale_of

    profile = load_cluster(cluster)
    root = str(scale_of(Path.cwd(), False, None, _given_folder("--data-root", data_root)).data_root)
    # where `run` stages the pretrained weights (see `weights.folder`); none configured: not checked
    cache = _given_folder("--weights", weights) or profile.weights or os.environ.get(ENV)
    cache = str(Path(cache).expanduser().resolve()) if cache else None
    job = DoctorJob(root, cache, profile.gpus_per_node or 0)
    folder.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=folder.resolve()))
    jobs: list[Submitted | Column] = []
    for title, nodes in [("node job", 1), ("2-node job", 2)]:
        if nodes > 1 and profile.executor != "slurm":
            jobs.append(Column(title, {}, NA))
            continue
        executor = make_executor(replace(profile, nodes=nodes, time_min=min(profile.time_min, JOB_MIN)))
        where = runs / title.replace(" ", "-")
        try:  # submitit echoes sbatch's refusal on stderr: it is said once, below
            with contextlib.redirect_stderr(io.StringIO()):
                jobs.append(Submitted(title, executor.submit(job, where, "sbrrepro-doctor"), where))
        except (FailedJobError, OSError) as e:
            if not jobs:  # the profile itself is refused (a partition, an account): bad input
                raise UserError(cluster or "local", None, f"SLURM refused the doctor's job: {_refusal(e)}") from None
            jobs.append(Column(title, {"job": f"FAIL: SLURM refused it: {_refusal(e)}"}))
    return Checkup(make_executor(profile), jobs, root, cache)


def _merge(reports: list[dict[str, str]]) -> dict[str, str]:
    """One cell per row over a job's tasks: the first task's failure (with its node), else the distinct values."""
    out = {}
    for label in dict.fromkeys(k for r in reports for k in r):
        cells = [(r["nodes"], r.get(label, NOT_REPORTED)) for r in reports]
        failed = [f"{cell} ({node})" for node, cell in cells if cell.startswith("FAIL")]
        out[label] = failed[0] if failed else ", ".join(dict.fromkeys(cell for _, cell in cells))
    return out


def _column(job: Submitted, state: str, timeout_min: float) -> Column:
    """A job's column from its tasks' results (submitit's result pickle per task)."""
    outcomes = [pickle_load(p) for p in sorted(job.folder.glob(f"{job.job_id}_*_result.pkl"))]
    reports = [value for kind, value in outcomes if kind == "success"]
    errors = [value.strip().splitlines()[-1] for kind, value in outcomes if kind != "success"]
    tasks = int(reports[0]["tasks"]) if reports else 0  # the job's, as its first task saw it
    log = JobPaths(job.folder, job.job_id, 0).stderr
    if state not in ENDED:
        ended = f"FAIL: still {state} after {timeout_min:g} min (cancelled)"
    elif errors:
        ended = f"FAIL: {errors[0]} (log: {log})"
    elif not reports:
        ended = f"FAIL: job {state}, no task reported (log: {log})"
    elif state != FINISHED or len(reports) < tasks:
        ended = f"FAIL: job {state}, {len(reports)} of {tasks} tasks reported (log: {log})"
    else:
        ended = OK
    return Column(f"{job.title} {job.job_id}", {"job": ended, **_merge(reports)})


def wait(checkup: Checkup, timeout_min: float) -> list[Column]:
    """Wait for the jobs, cancelling those not ended after `timeout_min` (or on an interruption); the
    table's columns."""
    jobs = checkup.submitted
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout_min * 60
    try:
        while True:
            states = checkup.executor.states([(j.job_id, j.folder) for j in jobs])
            if all(s in ENDED for s in states.values()) or time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
    finally:
        for j in jobs:
            if states.get(j.job_id) not in ENDED:
                checkup.executor.cancel(j.job_id, j.folder)
    return [_column(j, states[j.job_id], timeout_min) if isinstance(j, Submitted) else j for j in checkup.jobs]


def failures(columns: list[Column]) -> int:
    return sum(cell.startswith("FAIL") for c in columns for cell in c.cells.values())


def render(columns: list[Column]) -> str:
    """The table: a row per check, a column per job."""
    labels = ["job", *dict.fromkeys(label for c in columns for label in c.cells if label != "job")]
    rows = [["check", *(c.title for c in columns)], *([label, *(c.cell(label) for c in columns)] for label in labels)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in rows)
