"""The metric vocabulary shared by plans, published tables, results and reports.

Each metric says how the paper prints it and how ours is compared with the published value:
COCO APs within the plan's tolerance in points, parameter counts within a relative tolerance (or
exactly, for single layers), and what depends on the hardware (speed, memory) not judged at all.
"""

from __future__ import annotations

from dataclasses import dataclass

POINTS, RELATIVE, EXACT, INFORMATIVE = "points", "relative", "exact", "informative"
PARAMS_RELATIVE = 0.01  # the bound for # Params columns (SBR-CNN Tables 2, 6 and 7): 1%


@dataclass(frozen=True)
class Metric:
    label: str  # as the paper's column header
    compare: str  # POINTS, RELATIVE, EXACT or INFORMATIVE (shown, not part of the verdict)
    decimals: int = 1
    better: int = 0  # +1: higher is better, -1: lower is; 0: neither (a count), no best or second best marked

    @property
    def group(self) -> str | None:
        """The paper's column group of an AP (Table 11's bounding box and mask groups), else None."""
        return {"B": "Bounding box", "S": "Mask"}.get(self.label[0]) if "_AP" in self.label else None

    @property
    def short(self) -> str:
        """The label inside its group (AP50 under Bounding box); the whole label outside one."""
        return self.label.split("_", 1)[1] if self.group else self.label


# Column name -> the CocoMetric key it comes from (a fraction; tables print percent).
COCO_KEYS = {
    f"{task}_{name}": f"coco/{task}_{key}"
    for task in ("bbox", "segm")
    for name, key in (("AP", "mAP"), ("AP50", "mAP_50"), ("AP75", "mAP_75"), ("APs", "mAP_s"),
                      ("APm", "mAP_m"), ("APl", "mAP_l"))
}
# The mask AP_S/M/L under each convention of sizing a detection (sbrrepro.models.common.coco_sizes):
# by its box's area (MMDetection up to 2.11, the papers' forks) or its mask's (2.12 on, 3.3's CocoMetric).
# `segm_APs` etc. are the paper's convention (its recipe's `mask_sizes_by`); results.json keeps both.
SIZE_CONVENTIONS = {"boxarea": "box area", "maskarea": "mask area"}
CONVENTION_KEYS = {f"segm_AP{s}_{by}": f"coco/segm_mAP_{s}_{by}" for s in "sml" for by in SIZE_CONVENTIONS}
COCO_KEYS.update(CONVENTION_KEYS)
METRICS: dict[str, Metric] = {
    **{m: Metric(f"{m[0].upper()}_AP{m.split('_AP')[1]}", POINTS, better=1) for m in COCO_KEYS
       if m not in CONVENTION_KEYS},
    **{m: Metric(f"S_AP{m.split('_AP')[1].split('_')[0]} ({SIZE_CONVENTIONS[m.rsplit('_', 1)[1]]})", POINTS, better=1)
       for m in CONVENTION_KEYS},
    "params": Metric("# Params", EXACT, 0),  # trainable parameters, counted one by one
    "params_K": Metric("# Params (K)", RELATIVE, 0),
    "params_M": Metric("# Params (M)", RELATIVE),
    "speed_fps": Metric("Speed (img/s)", INFORMATIVE, better=1),
    "test_time_s": Metric("Test time (s/img)", INFORMATIVE, 3, better=-1),
    "test_mem_GB": Metric("Test memory (GB)", INFORMATIVE, better=-1),
    "mem_GB": Metric("Mem (GB)", INFORMATIVE, better=-1),
    "model_MB": Metric("Model (MB)", RELATIVE, 0),
}
VOCABULARY = tuple(METRICS)
LABELS = {name: m.label for name, m in METRICS.items()}
PARAM_UNITS = {"params": 1, "params_K": 1e3, "params_M": 1e6}


def from_coco(coco: dict[str, float]) -> dict[str, float]:
    """CocoMetric's fractions -> percent with the paper's one decimal; -1 (no such objects) is dropped."""
    out = {}
    for name, key in COCO_KEYS.items():
        value = coco.get(key)
        if value is not None and value >= 0:
            out[name] = round(100 * float(value), 1)
    return out


def sized_by(metrics: dict[str, float], by: str) -> dict[str, float]:
    """`metrics` whose mask AP_S/M/L (`segm_APs` ...) are those of the convention `by` ('box' or 'mask':
    the paper's) where the run computed both; a run that computed only CocoMetric's keeps its own."""
    return {**metrics, **{f"segm_AP{s}": metrics[f"segm_AP{s}_{by}area"] for s in "sml"
                          if f"segm_AP{s}_{by}area" in metrics}}


def from_params(count: int, wanted: list[str]) -> dict[str, float]:
    """A trainable-parameter count in the units the table prints it (the papers truncate)."""
    return {m: count / PARAM_UNITS[m] for m in wanted if m in PARAM_UNITS}
