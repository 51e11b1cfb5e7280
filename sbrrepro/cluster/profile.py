"""The cluster profile: which executor runs the jobs, and with what resources.

A YAML file (see slurm/) validated field by field; without one, this machine (`local`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..reader import read_yaml
from ..schema import Field, one_of, positive, validate

# SLURM's default MaxArraySize: the most tasks of one array where the cluster does not say.
SLURM_MAX_ARRAY_SIZE = 1001

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
class ClusterProfile:
    """A validated cluster profile: its name (the file's stem, or "local") and one attribute per field
    of PROFILE_FIELDS, with the same defaults (see there what each means). Picklable: the executors
    that hold one are pickled with the jobs they submit."""

    name: str = "local"
    executor: str = "local"
    nodes: int = 1
    gpus_per_node: int | None = None
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    parallel: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpu_flag: str = "gpus-per-node"
    time_min: int = 7 * 24 * 60
    gpu_memory_GB: float | None = None
    setup: tuple[str, ...] = ()
    weights: str | None = None
    sbatch: dict[str, str | int | float] = field(default_factory=dict)
    array_parallelism: int | None = None
    max_array_size: int | None = None


def _profile(name: str, values: dict) -> ClusterProfile:
    """One of its own: nothing it holds is shared with the schema's defaults."""
    return ClusterProfile(name, **{**values, "setup": tuple(values["setup"]), "sbatch": dict(values["sbatch"])})


def load_cluster(spec: str | None) -> ClusterProfile:
    """`None`: this machine. Otherwise a YAML file, or the name of one in ./slurm/."""
    if spec is None:
        return _profile("local", validate({}, PROFILE_FIELDS, "local"))
    path = Path(spec)
    if not path.exists() and (Path("slurm") / f"{spec}.yaml").exists():
        path = Path("slurm") / f"{spec}.yaml"
    try:
        data = read_yaml(path, what="a YAML cluster profile")
    except OSError as e:
        raise UserError(spec, None, f"cannot read the cluster profile: {e.strerror}; pass a YAML file "
                        "or the name of one in slurm/") from None
    return _profile(path.stem, validate(data or {}, PROFILE_FIELDS, str(path)))
