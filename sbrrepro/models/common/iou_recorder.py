"""IoU distributions of the training RoIs (SBR-CNN Fig. 3), recorded cheaply during training.

`IoURecordingSampler` wraps any RoI sampler and adds to two per-series histograms held in this
process (no per-RoI data is logged):
- `proposals`: at every sampling (so at every assign call), the IoU of every proposal that reached
  the assigner with its best ground truth, negatives included, in 0.05 bins over 0-1: the
  population of the authors' only published histogram code;
- `positives`: at the samplings that train the detection head, the IoU of every positive RoI with
  its matched ground truth, in 0.05 bins over 0.5-1. Ground-truth boxes that the sampler adds as
  proposals are left out of both: they are the targets themselves.
`IoUHistogramHook` sums the histograms of all ranks at the end of each epoch and writes them into
the work dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from mmdet.registry import HOOKS, TASK_UTILS
from mmdet.structures.bbox import bbox_overlaps
from mmengine import dist
from mmengine.hooks import Hook

from ...files import atomic_write
from ...layout import RunPaths
from ...results import read_histograms

BIN_EDGES = {"proposals": np.round(np.arange(0.0, 1.0001, 0.05), 2),
             "positives": np.round(np.arange(0.5, 1.0001, 0.05), 2)}

# (population, series) -> counts for the current epoch, in this process.
_counts: dict[tuple[str, str], np.ndarray] = {}


def _zeros(population: str) -> np.ndarray:
    return np.zeros(len(BIN_EDGES[population]) - 1, np.int64)


def record(population: str, series: str, ious: np.ndarray) -> None:
    edges = BIN_EDGES[population]
    counts, _ = np.histogram(np.clip(ious, edges[0], edges[-1]), bins=edges)
    _counts[population, series] = _counts.get((population, series), _zeros(population)) + counts


@TASK_UTILS.register_module()
class IoURecordingSampler:
    """Samples with `sampler` and records the IoUs under `series` (e.g. 'loop2')."""

    def __init__(self, series: str, sampler: dict, context=None, **default_args) -> None:
        self.series = series
        self.sampler = TASK_UTILS.build(sampler, default_args=dict(context=context, **default_args))

    def sample(self, assign_result, pred_instances, gt_instances, record_iou: bool = True, **kwargs):
        # before sampling: the sampler prepends the ground truths it adds as proposals to assign_result
        record("proposals", self.series, assign_result.max_overlaps.detach().float().cpu().numpy())
        result = self.sampler.sample(assign_result, pred_instances, gt_instances, **kwargs)
        if record_iou:  # a loop with no positive RoI still has its (empty) series
            keep = result.pos_is_gt == 0
            with torch.no_grad():
                ious = bbox_overlaps(result.pos_priors[keep].float(), result.pos_gt_bboxes[keep].float(),
                                     is_aligned=True)
            record("positives", self.series, ious.cpu().numpy())
        return result


@HOOKS.register_module()
class IoUHistogramHook(Hook):
    """Writes the work dir's IoU histograms: per population, bin edges and, per finished epoch, the
    counts of each series."""

    priority = "LOW"

    def before_train_epoch(self, runner) -> None:
        _counts.clear()  # a resumed epoch starts again from zero, as its training does

    def after_train_epoch(self, runner) -> None:
        names = sorted(_counts)
        if dist.get_world_size() > 1:
            gathered = dist.all_gather_object(names)
            names = sorted({n for ranks in gathered for n in ranks})
        counts = [torch.tensor(_counts.get(n, _zeros(n[0]))) for n in names]
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
