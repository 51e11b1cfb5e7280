"""IoU distribution of the positive training RoIs (SBR-CNN Fig. 3), recorded cheaply during training.

`IoURecordingSampler` wraps any RoI sampler: after each sampling it adds the IoU of every positive
RoI with its matched ground truth to a per-series histogram (0.05 bins from 0.5 to 1.0) held in this
process. Ground-truth boxes that the sampler adds as proposals are left out: they are the targets
themselves, not RoIs from the RPN or from a previous loop. `IoUHistogramHook` sums the histograms of
all ranks at the end of each epoch and writes them into the work dir, so no per-RoI data is logged.
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

from ..files import atomic_write
from ..layout import RunPaths

BIN_EDGES = np.round(np.arange(0.5, 1.0001, 0.05), 2)

# series name -> counts for the current epoch, in this process.
_counts: dict[str, np.ndarray] = {}


def record(series: str, ious: np.ndarray) -> None:
    counts, _ = np.histogram(np.clip(ious, 0.5, 1.0), bins=BIN_EDGES)
    _counts[series] = _counts.get(series, np.zeros(len(BIN_EDGES) - 1, np.int64)) + counts


@TASK_UTILS.register_module()
class IoURecordingSampler:
    """Samples with `sampler` and records the positives' IoUs under `series` (e.g. 'loop2')."""

    def __init__(self, series: str, sampler: dict, context=None, **default_args) -> None:
        self.series = series
        self.sampler = TASK_UTILS.build(sampler, default_args=dict(context=context, **default_args))

    def sample(self, assign_result, pred_instances, gt_instances, record_iou: bool = True, **kwargs):
        result = self.sampler.sample(assign_result, pred_instances, gt_instances, **kwargs)
        if record_iou:  # a loop with no positive RoI still has its (empty) series
            keep = result.pos_is_gt == 0
            with torch.no_grad():
                ious = bbox_overlaps(result.pos_priors[keep].float(), result.pos_gt_bboxes[keep].float(),
                                     is_aligned=True)
            record(self.series, ious.cpu().numpy())
        return result


@HOOKS.register_module()
class IoUHistogramHook(Hook):
    """Writes `iou_histograms.json`: bin edges and, per finished epoch, the counts of each series."""

    priority = "LOW"

    def before_train_epoch(self, runner) -> None:
        _counts.clear()  # a resumed epoch starts again from zero, as its training does

    def after_train_epoch(self, runner) -> None:
        series = sorted(_counts)
        if dist.get_world_size() > 1:
            gathered = dist.all_gather_object(series)
            series = sorted({s for names in gathered for s in names})
        counts = torch.tensor(
            np.stack([_counts.get(s, np.zeros(len(BIN_EDGES) - 1, np.int64)) for s in series])
            if series else np.zeros((0, len(BIN_EDGES) - 1), np.int64)
        )
        dist.all_reduce(counts)
        if not dist.is_main_process():
            return
        path = RunPaths(Path(runner.work_dir)).histograms
        data = json.loads(path.read_text()) if path.exists() else {"bin_edges": BIN_EDGES.tolist(), "epochs": {}}
        data["epochs"][str(runner.epoch + 1)] = {s: c.tolist() for s, c in zip(series, counts)}
        atomic_write(path, json.dumps(data, indent=1))
