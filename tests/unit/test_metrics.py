"""sbrrepro.metrics: the metric vocabulary: CocoMetric's fractions as the paper's percent, the mask
AP_S/M/L of either size convention, parameter counts in a table's unit, and how each metric is labelled,
grouped and compared."""

from __future__ import annotations

import pytest

from sbrrepro.metrics import (
    COCO_KEYS,
    CONVENTION_KEYS,
    EXACT,
    INFORMATIVE,
    LABELS,
    METRICS,
    PARAM_UNITS,
    POINTS,
    RELATIVE,
    VOCABULARY,
    from_coco,
    from_params,
    sized_by,
)


def test_from_coco_percent_with_one_decimal() -> None:
    coco = {"coco/bbox_mAP": 0.41249, "coco/bbox_mAP_50": 0.6251, "coco/segm_mAP": 0.37,
            "coco/segm_mAP_l": 1.0, "coco/segm_mAP_s_boxarea": 0.2049}
    assert from_coco(coco) == {"bbox_AP": 41.2, "bbox_AP50": 62.5, "segm_AP": 37.0, "segm_APl": 100.0,
                               "segm_APs_boxarea": 20.5}


def test_from_coco_drops_what_is_not_there() -> None:
    """-1 (no objects of that size), absent keys, NaN and keys that are not CocoMetric's AP give no number."""
    coco = {"coco/bbox_mAP": 0.0, "coco/bbox_mAP_s": -1, "coco/segm_mAP": float("nan"), "coco/bbox_mAP_copypaste": 1,
            "loss": 0.5, "bbox_AP": 0.9}
    assert from_coco(coco) == {"bbox_AP": 0.0}
    assert from_coco({}) == {}


def test_every_coco_key_is_cocometrics() -> None:
    assert set(COCO_KEYS.values()) == {f"coco/{t}_mAP{s}" for t in ("bbox", "segm")
                                       for s in ("", "_50", "_75", "_s", "_m", "_l")} | set(CONVENTION_KEYS.values())
    conventions = {f"segm_AP{s}_{by}": f"coco/segm_mAP_{s}_{by}" for s in "sml" for by in ("boxarea", "maskarea")}
    assert conventions == CONVENTION_KEYS


@pytest.mark.parametrize("by, other", [("box", "mask"), ("mask", "box")])
def test_sized_by_takes_the_papers_convention(by: str, other: str) -> None:
    metrics = {"segm_AP": 37.0, "segm_APs": 1.0, "segm_APm": 2.0, "segm_APl": 3.0,
               **{f"segm_AP{s}_{by}area": 10.0 + i for i, s in enumerate("sml")},
               **{f"segm_AP{s}_{other}area": 20.0 + i for i, s in enumerate("sml")}}
    out = sized_by(metrics, by)
    assert (out["segm_APs"], out["segm_APm"], out["segm_APl"]) == (10.0, 11.0, 12.0)
    assert {k: v for k, v in out.items() if k not in ("segm_APs", "segm_APm", "segm_APl")} == \
        {k: v for k, v in metrics.items() if k not in ("segm_APs", "segm_APm", "segm_APl")}
    assert metrics["segm_APs"] == 1.0  # not modified


def test_sized_by_keeps_a_run_of_cocometrics_keys_alone() -> None:
    """A run that computed only CocoMetric's own AP_S/M/L keeps them; one with a convention in part takes those."""
    metrics = {"segm_APs": 1.0, "segm_APm": 2.0, "segm_APl": 3.0}
    assert sized_by(metrics, "box") == metrics
    assert sized_by({**metrics, "segm_APs_boxarea": 9.0}, "box") == {**metrics, "segm_APs": 9.0,
                                                                      "segm_APs_boxarea": 9.0}


def test_from_params_in_each_unit() -> None:
    assert from_params(43_912_345, ["params", "params_K", "params_M", "bbox_AP"]) == \
        {"params": 43_912_345, "params_K": 43_912.345, "params_M": 43.912345}
    assert from_params(1, []) == {}
    assert PARAM_UNITS == {"params": 1, "params_K": 1e3, "params_M": 1e6}


@pytest.mark.parametrize("name, label, group, short", [
    ("bbox_AP", "B_AP", "Bounding box", "AP"),
    ("bbox_APs", "B_APs", "Bounding box", "APs"),
    ("segm_AP75", "S_AP75", "Mask", "AP75"),
    ("segm_APm_boxarea", "S_APm (box area)", "Mask", "APm (box area)"),
    ("segm_APl_maskarea", "S_APl (mask area)", "Mask", "APl (mask area)"),
    ("params_M", "# Params (M)", None, "# Params (M)"),
    ("speed_fps", "Speed (img/s)", None, "Speed (img/s)"),
])
def test_label_group_and_short(name: str, label: str, group: str | None, short: str) -> None:
    m = METRICS[name]
    assert (m.label, m.group, m.short) == (label, group, short)
    assert LABELS[name] == label


def test_how_each_metric_is_compared() -> None:
    """APs in points, higher better; parameter counts exactly (one layer) or within a relative bound,
    never ranked; what depends on the hardware shown, not judged."""
    for name in COCO_KEYS:
        assert (METRICS[name].compare, METRICS[name].better, METRICS[name].decimals) == (POINTS, 1, 1)
    assert (METRICS["params"].compare, METRICS["params"].decimals) == (EXACT, 0)
    assert {METRICS[m].compare for m in ("params_K", "params_M", "model_MB")} == {RELATIVE}
    assert {METRICS[m].better for m in ("params", "params_K", "params_M", "model_MB")} == {0}
    hardware = {"speed_fps": 1, "test_time_s": -1, "test_mem_GB": -1, "mem_GB": -1}
    assert {m: METRICS[m].better for m, spec in METRICS.items() if spec.compare == INFORMATIVE} == hardware


def test_vocabulary_and_labels_one_per_metric() -> None:
    assert VOCABULARY == tuple(METRICS) == tuple(LABELS)
    assert len(set(LABELS.values())) == len(LABELS)  # a table's header names one metric
    assert set(COCO_KEYS) < set(VOCABULARY) and set(PARAM_UNITS) < set(VOCABULARY)


def test_coco_fractions_become_the_papers_percent():
    got = from_coco({"coco/bbox_mAP": 0.4089, "coco/segm_mAP": 0.372, "coco/bbox_mAP_s": -1.0})
    assert got == {"bbox_AP": 40.9, "segm_AP": 37.2}  # -1 (no small objects) is not a number to show
