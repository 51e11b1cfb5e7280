"""sbrrepro.verify: our metrics against the published ones: a published cell as printed, the seeds'
mean and std, and each metric's tolerance (points for APs, exact or relative for parameter counts,
none for what depends on the hardware)."""

from __future__ import annotations

from sbrrepro.verify import MATCH, MISMATCH, MISSING, UNJUDGED, compare, mean_std, number


def test_judgements_use_the_tolerance_and_the_seeds_mean():
    published = {"bbox_AP": "40.9", "segm_AP": "37.2"}
    cells, judged = compare({"bbox_AP": 41.3, "segm_AP": 36.8}, published, ["bbox_AP", "segm_AP"], 0.5)
    assert judged == MATCH
    assert cells["bbox_AP"].diff == 0.4 and cells["segm_AP"].diff == -0.4
    assert compare({"bbox_AP": 41.5, "segm_AP": 37.2}, published, ["bbox_AP", "segm_AP"], 0.5)[1] == MISMATCH
    assert compare({"bbox_AP": 40.9}, published, ["bbox_AP", "segm_AP"], 0.5)[1] == MISSING
    assert compare({"bbox_AP": 40.9}, {"bbox_AP": ""}, ["bbox_AP"], 0.5)[1] == UNJUDGED
    # three seeds, one far off: the mean (41.0) is judged, not each seed
    cells, judged = compare([{"bbox_AP": 40.0}, {"bbox_AP": 41.0}, {"bbox_AP": 42.0}], {"bbox_AP": "40.9"},
                            ["bbox_AP"], 0.5)
    assert judged == MATCH and (cells["bbox_AP"].ours, cells["bbox_AP"].std, cells["bbox_AP"].seeds) == (41.0, 1.0, 3)


def test_a_published_cell_as_printed():
    assert number("44,170") == 44170.0 and number("-0.3") == -0.3
    assert number("") is None and number(None) is None and number("–") is None


def test_mean_and_sample_std_of_the_seeds():
    assert mean_std([40.0]) == (40.0, None), "one value is its own mean, with no spread"
    assert mean_std([40.0, 41.0, 42.0]) == (41.0, 1.0)
    assert mean_std([0.1, 0.2]) == (0.15, 0.070711), "rounded: no float noise in reports"


def test_parameter_counts_exactly_or_within_one_percent_and_the_hardware_unjudged():
    assert compare({"params": 44170}, {"params": "44,170"}, ["params"], 0.5)[1] == MATCH
    assert compare({"params": 44171}, {"params": "44,170"}, ["params"], 0.5)[1] == MISMATCH  # one layer: exact
    assert compare({"params_K": 101.0}, {"params_K": "100"}, ["params_K"], 0.5)[1] == MATCH  # 1% of 100
    assert compare({"params_K": 101.5}, {"params_K": "100"}, ["params_K"], 0.5)[1] == MISMATCH
    cells, judged = compare({"speed_fps": 3.0}, {"speed_fps": "10"}, ["speed_fps"], 0.5)
    assert judged == UNJUDGED and cells["speed_fps"].diff == -7.0, "shown with its Δ, never judged"
    # an AP and an unjudged speed: the AP alone decides
    assert compare({"bbox_AP": 40.9, "speed_fps": 3.0}, {"bbox_AP": "40.9", "speed_fps": "10"},
                   ["bbox_AP", "speed_fps"], 0.5)[1] == MATCH
