"""The metric vocabulary shared by plans, published tables, results and reports."""

from __future__ import annotations

# Column name -> the CocoMetric key it comes from (a fraction; tables print percent).
COCO_KEYS = {
    f"{task}_{name}": f"coco/{task}_{key}"
    for task in ("bbox", "segm")
    for name, key in (("AP", "mAP"), ("AP50", "mAP_50"), ("AP75", "mAP_75"), ("APs", "mAP_s"),
                      ("APm", "mAP_m"), ("APl", "mAP_l"))
}
OTHER = ("params_M", "speed_fps", "mem_GB")
VOCABULARY = (*COCO_KEYS, *OTHER)

# How each metric is printed in the paper's tables.
LABELS = {
    **{f"{t}_AP": f"{t[0].upper()}_AP" for t in ("bbox", "segm")},
    **{f"{t}_AP{s}": f"{t[0].upper()}_AP{s}" for t in ("bbox", "segm") for s in ("50", "75", "s", "m", "l")},
    "params_M": "# Params (M)",
    "speed_fps": "Speed",
    "mem_GB": "Mem (GB)",
}


def from_coco(coco: dict[str, float]) -> dict[str, float]:
    """CocoMetric's fractions -> percent with the paper's one decimal; -1 (no such objects) is dropped."""
    out = {}
    for name, key in COCO_KEYS.items():
        value = coco.get(key)
        if value is not None and value >= 0:
            out[name] = round(100 * float(value), 1)
    return out
