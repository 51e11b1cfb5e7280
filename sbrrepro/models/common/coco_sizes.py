"""`TwoConventionCocoMetric`: MMDetection 3.3's CocoMetric, whose mask AP_S/M/L are reported under both
conventions of sizing a detection, and under the paper's by their usual names.

pycocotools' `COCO.loadRes` sets a detection's `area` (which decides, for an unmatched detection,
whether it counts in the small, medium or large range) from its box (w x h) when the results carry a
`bbox`, and from its mask only when they do not. Up to MMDetection 2.11 a mask result kept its box, so
the mask AP_S/M/L were sized by box area (the 1.x forks, SBR-CNN's 2.8.0); from 2.12 on (and in 3.3)
CocoMetric pops the box before evaluating segm, so they are sized by mask area. AP, AP50 and AP75 do
not depend on it.

The stock evaluation runs as it is (mask area); the segm results are then evaluated a second time with
their boxes kept (box area). Both are reported, `segm_mAP_{s,m,l}_maskarea` and
`segm_mAP_{s,m,l}_boxarea`, and `segm_mAP_{s,m,l}` are those of `mask_sizes_by` (the paper's). Uploads
for an evaluation server (`format_only`) are CocoMetric's, which keep the box.
"""

from __future__ import annotations

from typing import Any

from mmdet.datasets.api_wrappers import COCOeval, COCOevalMP
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import METRICS
from mmengine.fileio import load
from mmengine.logging import MMLogger

CONVENTIONS = ("box", "mask")
SIZES = ("s", "m", "l")
SIZE_STATS = {"s": 3, "m": 4, "l": 5}  # their places in COCOeval.stats


@METRICS.register_module()
class TwoConventionCocoMetric(CocoMetric):
    """CocoMetric with the mask AP_S/M/L under both size conventions; see the module's docstring."""

    def __init__(self, *args: Any, mask_sizes_by: str = "mask", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if mask_sizes_by not in CONVENTIONS:
            raise ValueError(f"mask_sizes_by: {mask_sizes_by!r} is not one of {CONVENTIONS}")
        self.mask_sizes_by = mask_sizes_by
        self._segm: list[dict] | None = None

    def results2json(self, results, outfile_prefix: str) -> dict:
        files = super().results2json(results, outfile_prefix)
        # kept in memory: CocoMetric removes its temporary files before returning
        self._segm = load(files["segm"]) if "segm" in files and not self.format_only else None
        return files

    def compute_metrics(self, results: list) -> dict[str, float]:
        self._segm = None
        out = super().compute_metrics(results)  # segm sized by mask area (the box popped)
        segm, self._segm = self._segm, None
        wanted = [s for s in SIZES if f"segm_mAP_{s}" in out]
        if not segm or not wanted:  # nothing detected, format_only, or no size asked for
            return out
        by_box = self._box_area_stats(segm)
        for s in wanted:
            out[f"segm_mAP_{s}_maskarea"] = out[f"segm_mAP_{s}"]
            out[f"segm_mAP_{s}_boxarea"] = by_box[s]
            out[f"segm_mAP_{s}"] = out[f"segm_mAP_{s}_{self.mask_sizes_by}area"]
        MMLogger.get_current_instance().info(
            "segm AP_S/M/L sized by box area: " + " ".join(f"{by_box[s]:.3f}" for s in SIZES) +
            "; by mask area: " + " ".join(f"{out[f'segm_mAP_{s}_maskarea']:.3f}" for s in wanted) +
            f"; reported as segm_mAP_s/m/l: {self.mask_sizes_by} area")
        return out

    def _box_area_stats(self, segm: list[dict]) -> dict[str, float]:
        """The segm AP_S/M/L with each detection sized by its box: loadRes keeps `area` = w x h of the
        `bbox` that the results carry (CocoMetric's evaluation drops it)."""
        coco_dt = self._coco_api.loadRes(segm)
        evaluator = (COCOevalMP if self.use_mp_eval else COCOeval)(self._coco_api, coco_dt, "segm")
        evaluator.params.catIds = self.cat_ids
        evaluator.params.imgIds = self.img_ids
        evaluator.params.maxDets = list(self.proposal_nums)
        evaluator.params.iouThrs = self.iou_thrs
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        return {s: float(f"{round(evaluator.stats[i], 3)}") for s, i in SIZE_STATS.items()}
