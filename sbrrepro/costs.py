"""What trainings cost, for planning: GPU-hours at full scale (process-hours at smoke scale), the disk
their checkpoints take and the requeues a time limit imposes.

Each training's hours come from the best basis there is, which is said: what `collect` measured of
it in this study (wall time x processes); a `preflight` of it on a GPU at the row's own image size
(the schedule's iterations x seconds per iteration x processes); the paper's durations for its zoo
model; else a model-class fallback (a two-stage model as Mask R-CNN). A preflight that does not
match (a CPU, another image size) is named as not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import preflight, study_files
from .errors import UserError
from .layout import RunPaths, StudyPaths
from .plan import Row
from .preflight import Finding
from .rows import RowConfig
from .study_files import Number
from .zoo import MODELS, hours_per_epoch

# What MMDetection trains of COCO train2017 (its images with annotations: `filter_empty_gt`).
COCO_TRAIN_IMAGES = 117_266
PAPER = "paper's durations"  # see zoo.COST_BASIS
FALLBACK = "model-class fallback: a two-stage model as Mask R-CNN"
# A checkpoint without a preflight: the weights and SGD's momentum, 4 bytes each, of Mask R-CNN R-50-FPN's
# 44.2M parameters; a model-class fallback as the hours' is.
FALLBACK_CHECKPOINT_MB = 2 * 4 * 44.2e6 / 2**20


def paper_estimate(row: Row) -> float | None:
    """Full-scale GPU-hours of the training a row needs, before anything was measured."""
    per_epoch = MODELS[row.model].gpu_hours_per_epoch(row.options)
    return None if per_epoch is None else row.recipe["epochs"] * per_epoch


def _processes(row: Row) -> int:
    return row.recipe["nodes"] * row.recipe["gpus_per_node"]


def iterations(row: Row, train_images: int = COCO_TRAIN_IMAGES) -> int:
    """Iterations per process of the row's schedule at its paper's batch."""
    r = row.recipe
    if r.get("iters"):
        return r["iters"]
    return r["epochs"] * math.ceil(train_images / (_processes(row) * r["images_per_gpu"]))


def from_preflight(row: Row, found: Finding | None) -> tuple[float | None, str | None]:
    """GPU-hours from a usable preflight, else None and why it was not used (None: there was none)."""
    if found is None:
        return None, None
    size = list(row.recipe["image_scale"])
    if found.error is not None:
        return None, f"preflight not used: it crashed ({found.error})"
    if found.device_kind != "cuda" or found.image_size != size:
        why = "a CPU measurement" if found.device_kind != "cuda" else f"not at {size[0]}x{size[1]}"
        return None, (f"preflight on {found.device} at {found.image_size[0]}x{found.image_size[1]} not used: {why}")
    hours = iterations(row) * found.s_per_iter * _processes(row) / 3600
    return hours, f"preflight on {found.device}: {found.s_per_iter:.2f} s/iter x {iterations(row)} iterations"


def measured(run: RunPaths) -> float | None:
    """Hours x processes that a finished run took, from what its job wrote; None where either file is
    missing or damaged, or the clock went back."""
    try:
        started = study_files.provenance(run.provenance)
        done = study_files.done(run.done)
    except UserError:
        return None
    hours = (done["finished"] - started["started"]) / 3600 * started["processes"]
    return hours if hours >= 0 else None


@dataclass(frozen=True)
class Cost:
    hours: float | None  # None: not known (smoke scale, before it ran)
    basis: str
    checkpoint_GB: float | None = None  # at full scale: the disk its kept checkpoints take at most
    requeues: int | None = None  # at full scale: how often the profile's time limit ends it before it is done


@dataclass(frozen=True)
class Summary:
    rows: int
    trainings: int
    evaluations: int
    hours: float | None  # for the unique trainings; None until every one is known
    hours_one_per_row: float | None  # had every row trained its own model
    checkpoint_GB: float | None = None


def summarize(rows: list[tuple[Row, RowConfig]], paths: StudyPaths, scale: str,
              time_min: int | None = None) -> tuple[Summary, dict[str, Cost]]:
    """What a set of plan rows needs, what sharing trainings saves, and each training's cost."""
    costs = plan_costs(rows, paths, scale, time_min)
    hours = {k: c.hours for k, c in costs.items()}
    known = all(h is not None for h in hours.values())
    disk = [c.checkpoint_GB for c in costs.values()]
    return Summary(len(rows), len(hours), len({rc.key for _, rc in rows if rc.eval_only}),
                   sum(hours.values()) if known else None,
                   sum(hours[rc.train_key] for _, rc in rows) if known else None,
                   sum(disk) if disk and None not in disk else None), costs


def plan_costs(rows: list[tuple[Row, RowConfig]], paths: StudyPaths, scale: str,
               time_min: int | None = None) -> dict[str, Cost]:
    """Each training's cost, from the best basis there is (see the module's docstring); with the
    profile's `time_min`, the requeues it needs."""
    known = study_files.read(paths.costs, {str: Number(0, 1e15)}, "the GPU-hours `collect` measured, by training key",
                             "delete it and run `sbrrepro collect` again") if paths.costs.exists() else {}
    findings = preflight.load(paths)
    out: dict[str, Cost] = {}
    for row, rc in rows:
        key = rc.train_key
        if key in out:
            continue
        found = findings.get(key)
        if key in known:
            hours, basis = known[key], "measured in this study"
        elif scale != "full":
            hours, basis = None, "unknown until measured"
        else:
            hours, said = from_preflight(row, found)
            basis = said or ""
            if hours is None:
                paper = paper_estimate(row)
                hours, basis = ((paper, PAPER) if paper is not None
                                else (row.recipe["epochs"] * hours_per_epoch(0), FALLBACK))
                basis = f"{basis}; {said}" if said else basis
        if scale != "full":
            out[key] = Cost(hours, basis)
            continue
        checkpoint_MB = found.checkpoint_MB if found and found.checkpoint_MB else FALLBACK_CHECKPOINT_MB
        wall_min = hours / _processes(row) * 60
        kept = row.recipe["keep_checkpoints"] + 1  # and the one being written
        out[key] = Cost(hours, basis, checkpoint_MB * kept / 1024,
                        None if time_min is None else max(0, math.ceil(wall_min / time_min) - 1))
    return out


def estimate(rows: list[tuple[Row, RowConfig]], paths: StudyPaths, scale: str) -> dict[str, float | None]:
    """Hours per training key (see `plan_costs`)."""
    return {key: c.hours for key, c in plan_costs(rows, paths, scale).items()}
