"""Stage 4: finished runs -> results (plain data), read from what MMEngine and CocoMetric wrote.

MMEngine writes one folder per start of a run (`<work_dir>/<timestamp>/vis_data/scalars.json`, JSON
lines): training lines carry `loss`, validation lines carry CocoMetric's `coco/...` keys with `step` =
epoch. A resumed run adds a new timestamp folder; the newest validation of the last epoch wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import study_files
from .errors import UserError
from .layout import RunPaths
from .reader import STUDY_BYTES, parse_json, read_text
from .study_files import NUMBER, Number, problem

# What is read of a line of MMEngine's log: a training's, or a validation's (and its `coco/...` numbers)
_LINE = {"step?": Number(0, 1e12, integer=True), "epoch?": Number(0, 1e9, integer=True), "loss?": NUMBER,
         "memory?": NUMBER}


def _file_lines(path: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    try:
        whole = read_text(path, STUDY_BYTES)
    except OSError as e:
        raise study_files.unreadable(path, e, "MMEngine's log of the run is expected there: move it aside") from None
    for text in whole.splitlines():
        try:
            line = parse_json(text, str(path))
        except UserError:  # a line cut short by a kill
            continue
        # one not of MMEngine's shape (edited by hand) is skipped too: it would be a guess at what it meant
        if problem(line, _LINE) is None and ("loss" in line or all(  # a validation's: its numbers, as floats
                NUMBER.holds(v) for k, v in line.items() if k.startswith("coco/"))):
            lines.append(line)
    return lines


def _log_lines(run: RunPaths) -> list[dict[str, Any]]:
    return [line for path in run.scalars() for line in _file_lines(path)]


def epoch_metrics(run: RunPaths) -> dict[int, dict[str, float]]:
    """CocoMetric's output of every validation, by epoch ({} for one that detected nothing, which
    CocoMetric reports as no result); a validation run again after a resume replaces the earlier."""
    found: dict[int, dict[str, float]] = {}
    for line in _log_lines(run):
        if "loss" not in line and "step" in line:
            found[line["step"]] = {k: float(v) for k, v in line.items() if k.startswith("coco/")}
    return found


def epoch_losses(run: RunPaths) -> dict[int, float]:
    """The mean training loss of each epoch, for training curves. A resumed run logs again the
    epoch it was cut in: the newest start's lines of an epoch replace the older's. Lines without
    an `epoch` key (a training logged by iteration) are skipped: they name no epoch."""
    losses: dict[int, list[float]] = {}
    for path in run.scalars():  # oldest first
        found: dict[int, list[float]] = {}
        for line in _file_lines(path):
            if "loss" in line and "epoch" in line:
                found.setdefault(int(line["epoch"]), []).append(float(line["loss"]))
        losses.update(found)
    return {epoch: sum(values) / len(values) for epoch, values in sorted(losses.items())}


def final_metrics(run: RunPaths, step: int) -> dict[str, float] | None:
    """The metrics of the evaluation after `step` epochs (iterations, for an iteration schedule);
    None when it has not happened."""
    return epoch_metrics(run).get(step)


def recorded_coco(run: RunPaths, eval_only: bool) -> dict[str, float]:
    """CocoMetric's output of a finished run: a training's final validation in its log, or what an
    evaluation's job kept of `runner.test()` ({} for detections written for the evaluation server)."""
    if eval_only:
        return study_files.done(run.done, study_files.EVALUATED)["metrics"]
    final = run.final_step()
    return (final_metrics(run, final[0]) if final else None) or {}


def lacks_sizes(coco: dict[str, float]) -> bool:
    """Whether a run scored masks without the mask AP_S/M/L under both size conventions (box and mask
    area, sbrrepro.models.common.coco_sizes): it finished before they were computed."""
    return "coco/segm_mAP" in coco and "coco/segm_mAP_s_boxarea" not in coco


# population -> bin edges and, per epoch, the counts per series; a file written before there were
# populations holds the positives alone
_HISTOGRAMS = {"bin_edges": [NUMBER, ...], "epochs": {str: {str: [Number(0, 1e15, integer=True), ...]}}}


def read_histograms(path: Path) -> dict[str, Any]:
    """A histograms file: population -> bin edges and per-epoch counts per series."""
    data = study_files.read(path, ({str: _HISTOGRAMS}, _HISTOGRAMS), 'the IoU histograms its training records: '
                            '{population: {"bin_edges": [numbers], "epochs": {epoch: {series: [counts]}}}}',
                            "delete it: a training records them again at each epoch's end")
    return {"positives": data} if "bin_edges" in data else data


def load_histograms(run: RunPaths, population: str) -> tuple[list[float], dict[str, list[int]]] | None:
    """Bin edges and, per series, the IoU counts of `population` ('proposals' or 'positives')
    summed over every recorded epoch; None before the first epoch has ended."""
    if not run.histograms.exists() or population not in (data := read_histograms(run.histograms)):
        return None
    total: dict[str, list[int]] = {}
    for per_series in data[population]["epochs"].values():
        for name, counts in per_series.items():
            total[name] = [a + b for a, b in zip(total.get(name, [0] * len(counts)), counts)]
    return data[population]["bin_edges"], total


def training_footprint(run: RunPaths) -> dict[str, float]:
    """Table 2's Mem (the most GPU memory a training iteration took, which MMEngine logs on GPUs
    only) and Model (the size of the final checkpoint, optimizer state included, in MiB)."""
    out: dict[str, float] = {}
    memory = [line["memory"] for line in _log_lines(run) if "loss" in line and "memory" in line]
    if memory:
        out["mem_GB"] = max(memory) / 1024  # MMEngine logs MiB
    checkpoint = run.final_checkpoint()
    if checkpoint is not None and checkpoint.exists():
        out["model_MB"] = checkpoint.stat().st_size / 2**20
    return out
