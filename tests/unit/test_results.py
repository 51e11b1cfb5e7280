"""sbrrepro.results: what is read of a finished run, from MMEngine's logs (every start of the run; the
newest validation of an epoch wins; lines cut by a kill or not of MMEngine's shape skipped), from the
job's done.json and from the IoU histograms file."""

from __future__ import annotations

import json

import pytest

from sbrrepro.errors import UserError
from sbrrepro.layout import RunPaths
from sbrrepro.results import (
    epoch_metrics,
    final_metrics,
    lacks_sizes,
    load_histograms,
    read_histograms,
    recorded_coco,
    training_footprint,
)
from tests.helpers import write_scalars


def _log(run: RunPaths, stamp: str, lines: list, tail: str = "") -> None:
    write_scalars(run, lines, stamp, tail)


def _val(step: int, bbox: float, **more: float) -> dict:
    return {"coco/bbox_mAP": bbox, **more, "step": step}


@pytest.fixture
def run(tmp_path) -> RunPaths:
    """Two epochs, cut in the second and resumed: its second start validates epoch 2 again."""
    run = RunPaths(tmp_path / "run")
    _log(run, "20260101_000000", [{"loss": 2.0, "epoch": 1, "step": 1, "memory": 2048}, _val(1, 0.1),
                                  _val(2, 0.15), "not json", {"loss": "high", "epoch": 2}], tail='{"loss": 1')
    _log(run, "20260102_000000", [{"loss": 1.0, "epoch": 2, "step": 2, "memory": 3072},
                                  _val(2, 0.2, **{"coco/segm_mAP": 0.18})])
    return run


def test_each_validation_by_epoch_the_newest_winning(run):
    assert epoch_metrics(run) == {1: {"coco/bbox_mAP": 0.1}, 2: {"coco/bbox_mAP": 0.2, "coco/segm_mAP": 0.18}}
    assert final_metrics(run, 2) == {"coco/bbox_mAP": 0.2, "coco/segm_mAP": 0.18} and final_metrics(run, 3) is None
    assert epoch_metrics(RunPaths(run.root.parent / "nothing")) == {}


def test_a_finished_runs_coco_numbers_from_its_log_or_its_evaluations_done(run):
    assert recorded_coco(run, eval_only=False) == {}  # not finished yet
    run.done.write_text(json.dumps({"finished": 1.0, "epochs": 2}))
    assert recorded_coco(run, eval_only=False) == final_metrics(run, 2)
    evaluation = RunPaths(run.root.parent / "eval")
    evaluation.root.mkdir()
    evaluation.done.write_text(json.dumps({"finished": 1.0, "metrics": {"coco/segm_mAP": 0.3}}))
    assert recorded_coco(evaluation, eval_only=True) == {"coco/segm_mAP": 0.3}


def test_a_run_lacks_sizes_where_it_scored_masks_before_both_conventions():
    assert lacks_sizes({"coco/segm_mAP": 0.3, "coco/segm_mAP_s": 0.1})
    assert not lacks_sizes({"coco/segm_mAP": 0.3, "coco/segm_mAP_s_boxarea": 0.1})
    assert not lacks_sizes({"coco/bbox_mAP": 0.3})  # no masks


def test_memory_and_model_size_of_a_training(run):
    assert training_footprint(run) == {"mem_GB": 3.0}  # the most of any iteration; no checkpoint yet
    run.done.write_text(json.dumps({"finished": 1.0, "epochs": 2}))
    run.checkpoint(2).write_bytes(b"\0" * 2**20)
    assert training_footprint(run) == {"mem_GB": 3.0, "model_MB": 1.0}


def test_iou_histograms_summed_over_epochs_per_population(tmp_path):
    run = RunPaths(tmp_path / "run")
    assert load_histograms(run, "positives") is None  # before the first epoch has ended
    run.root.mkdir()
    positives = {"bin_edges": [0.5, 0.75, 1.0], "epochs": {"1": {"loop1": [1, 2]}, "2": {"loop1": [3, 4],
                                                                                          "loop2": [0, 5]}}}
    run.histograms.write_text(json.dumps({"positives": positives, "proposals": {"bin_edges": [0, 1], "epochs": {}}}))
    assert load_histograms(run, "positives") == ([0.5, 0.75, 1.0], {"loop1": [4, 6], "loop2": [0, 5]})
    assert load_histograms(run, "proposals") == ([0, 1], {}) and load_histograms(run, "other") is None
    run.histograms.write_text(json.dumps(positives))  # written before there were populations: the positives
    assert read_histograms(run.histograms) == {"positives": positives}
    run.histograms.write_text(json.dumps({"positives": {**positives, "bin_edges": "0.5"}}))
    with pytest.raises(UserError, match="a training records them again"):
        read_histograms(run.histograms)
