"""IoU distributions of the training RoIs (SBR-CNN Fig. 3), recorded cheaply during training.

`IoURecordingSampler` wraps any RoI sampler and adds to two per-series histograms held in this
process (no per-RoI data is logged):
- `proposals`: at every sampling (so at every assign call), the IoU of every proposal that reached
  the assigner with its best ground truth, negatives included, in 0.05 bins over 0-1: the
  population of the authors' only published histogram code;
- `positives`: at the samplings that train the detection head, the IoU of every positive RoI with
  its matched ground truth, in 0.05 bins over 0.5-1. Ground-truth boxes that the sampler adds as
  proposals are left out of both: they are the targets themselves.
The counts stay on the IoUs' device, since a copy to the host per assign call would wait for the
GPU every time; `IoUHistogramHook` brings them to the host once per logging interval, sums the
histograms of all ranks at the end of each epoch and writes them into the work dir.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import torch
from mmdet.registry import HOOKS, TASK_UTILS
from mmdet.structures.bbox import bbox_overlaps
from mmengine import dist
from mmengine.hooks import Hook, LoggerHook

from ...files import atomic_write
from ...layout import RunPaths
from ...results import read_histograms

BIN_EDGES = {"proposals": np.round(np.arange(0.0, 1.0001, 0.05), 2),
             "positives": np.round(np.arange(0.5, 1.0001, 0.05), 2)}

# (population, series) -> counts in this process: on the IoUs' device since the last flush, and
# on the host for the current epoch up to it.
_counts: dict[tuple[str, str], torch.Tensor] = {}
_epoch_counts: dict[tuple[str, str], np.ndarray] = {}


def _zeros(population: str) -> np.ndarray:
    return np.zeros(len(BIN_EDGES[population]) - 1, np.int64)


@cache
def _edges(population: str, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(BIN_EDGES[population], dtype=torch.float64, device=device)


def record(population: str, series: str, ious: torch.Tensor | np.ndarray) -> None:
    """Adds `ious` to the histogram of `series`, as `np.histogram(np.clip(ious, edges[0],
    edges[-1]), bins=edges)` counts them, with device ops only."""
    ious = torch.as_tensor(ious).detach()
    edges = _edges(population, ious.device)
    # compared in float64, as numpy compares float32 IoUs with the float64 edges
    x = ious.reshape(-1, 1).to(torch.float64).clamp(edges[0], edges[-1])
    # numpy's counts: the differences of #(x < edge), the last edge counted as <= (a NaN is below
    # none, so left out); on a GPU, torch.bincount would read its input's extremes on the host
    below = torch.cat([(x < edges[:-1]).sum(0), (x <= edges[-1:]).sum(0)])
    counts = below.diff()
    _counts[population, series] = _counts.get((population, series), 0) + counts


def flush() -> None:
    """Moves the device counts into this epoch's host counts."""
    for key, counts in _counts.items():
        _epoch_counts[key] = _epoch_counts.get(key, _zeros(key[0])) + counts.cpu().numpy()
    _counts.clear()


@TASK_UTILS.register_module()
class IoURecordingSampler:
    """Samples with `sampler` and records the IoUs under `series` (e.g. 'loop2')."""

    def __init__(self, series: str, sampler: dict, context=None, **default_args) -> None:
        self.series = series
        self.sampler = TASK_UTILS.build(sampler, default_args=dict(context=context, **default_args))

    def sample(self, assign_result, pred_instances, gt_instances, record_iou: bool = True, **kwargs):
        # before sampling: the sampler prepends the ground truths it adds as proposals to assign_result
        record("proposals", self.series, assign_result.max_overlaps)
        result = self.sampler.sample(assign_result, pred_instances, gt_instances, **kwargs)
        if record_iou:  # a loop with no positive RoI still has its (empty) series
            keep = result.pos_is_gt == 0
            with torch.no_grad():
                ious = bbox_overlaps(result.pos_priors[keep].float(), result.pos_gt_bboxes[keep].float(),
                                     is_aligned=True)
            record("positives", self.series, ious)
        return result


@HOOKS.register_module()
class IoUHistogramHook(Hook):
    """Writes the work dir's IoU histograms: per population, bin edges and, per finished epoch, the
    counts of each series."""

    priority = "LOW"
    _interval = 0  # iterations between flushes; 0: at the end of the epoch only

    def before_train(self, runner) -> None:
        # the logging interval MMEngine uses: its LoggerHook logs every `interval` inner iterations
        self._interval = next((h.interval for h in runner.hooks if isinstance(h, LoggerHook)), 0)

    def before_train_epoch(self, runner) -> None:
        _counts.clear()  # a resumed epoch starts again from zero, as its training does
        _epoch_counts.clear()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.every_n_inner_iters(batch_idx, self._interval):
            flush()

    def after_train_epoch(self, runner) -> None:
        flush()
        names = sorted(_epoch_counts)
        if dist.get_world_size() > 1:
            gathered = dist.all_gather_object(names)
            names = sorted({n for ranks in gathered for n in ranks})
        counts = [torch.tensor(_epoch_counts.get(n, _zeros(n[0]))) for n in names]
        for c in counts:
            dist.all_reduce(c)
        if not dist.is_main_process():
            return
        path = RunPaths(Path(runner.work_dir)).histograms
        data = read_histograms(path) if path.exists() else {}
        for population, edges in BIN_EDGES.items():
            part = data.setdefault(population, {"bin_edges": edges.tolist(), "epochs": {}})
            epoch = {series: c.tolist() for (p, series), c in zip(names, counts) if p == population}
            part["epochs"][str(runner.epoch + 1)] = epoch
        atomic_write(path, json.dumps(data, indent=1))
