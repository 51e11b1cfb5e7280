"""A tiny real training through the local executor (submitit, MMEngine, pycocotools), end to end:
configs -> jobs -> results -> tables and figure, and a second `run` submits nothing."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from conftest import TABLE3

from sbrrepro import jobs
from sbrrepro.collect import collect
from sbrrepro.configs import smoke_scale, write_configs
from sbrrepro.dataset import SyntheticSpec, ensure_dataset
from sbrrepro.executors import LocalExecutor
from sbrrepro.figures import default_rows, draw, panels
from sbrrepro.plan import load_plan
from sbrrepro.results import load_histograms
from sbrrepro.study import Study

pytest.importorskip("mmcv._ext")


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    study = Study.open(root, "smoke", create=True)
    data = ensure_dataset(root / "data", SyntheticSpec(train_images=6, val_images=3))
    scale = dataclasses.replace(smoke_scale(data), epochs=1, warmup_iters=2)
    plan = load_plan(TABLE3)
    plan = dataclasses.replace(plan, rows=[plan.rows[0], plan.rows[2]])  # Mask R-CNN, R^3-CNN 2 loops
    rows = write_configs(plan, scale, study.configs)
    study.register(plan.path, rows)
    submitted = jobs.submit(study, rows, LocalExecutor())
    assert len(submitted) == 2
    deadline = time.time() + 900
    while time.time() < deadline:
        states = jobs.states(study, rows)
        if all(s.state in (jobs.DONE, "failed") for s in states):
            break
        time.sleep(3)
    return study, rows


def test_runs_finish_and_rerun_submits_nothing(finished_study):
    study, rows = finished_study
    states = jobs.states(study, rows)
    logs = {s.key: Path(s.log).read_text()[-3000:] for s in states if s.state != jobs.DONE and s.log}
    assert [s.state for s in states] == [jobs.DONE, jobs.DONE], logs
    assert jobs.submit(study, rows, LocalExecutor()) == []
    assert len(study.submissions()) == 2


def test_collect_reads_metrics_the_runs_computed(finished_study):
    study, rows = finished_study
    done = collect(study)
    by_row = {r["row"]: r for r in done.rows}
    for rc in rows:
        # ours comes from CocoMetric's line in the run's own log, converted to the paper's percent
        log = next(study.run_dir(rc.key).glob("*/vis_data/scalars.json")).read_text().splitlines()
        val = [json.loads(line) for line in log if "loss" not in json.loads(line)][-1]
        metrics = by_row[rc.row]["metrics"]
        assert metrics["bbox_AP"] == round(100 * val["coco/bbox_mAP"], 1)
        assert metrics["segm_AP"] == round(100 * val["coco/segm_mAP"], 1)
        published = float(load_plan(TABLE3).published[rc.row]["bbox_AP"])
        assert by_row[rc.row]["diff"]["bbox_AP"] == round(metrics["bbox_AP"] - published, 1)
        assert by_row[rc.row]["verdict"] == "smoke"
    md = (study.root / "report" / "sbr-cnn-table3.md").read_text()
    assert "| 1 | Mask | 1 | 1 | 38.2 |" in md and "| 3 | R^3-CNN | 2 | 1 | 40.4 |" in md
    assert (study.root / "report" / "sbr-cnn-table3.tex").read_text().count(r"\\") >= 4


def test_iou_histograms_are_written_per_loop_and_plotted(finished_study):
    study, rows = finished_study
    mask, r3 = rows
    edges, mask_series = load_histograms(study.run_dir(mask.key))
    assert edges[0] == 0.5 and edges[-1] == 1.0 and len(edges) == 11
    assert list(mask_series) == ["rcnn"] and sum(mask_series["rcnn"]) > 0
    _, r3_series = load_histograms(study.run_dir(r3.key))
    assert sorted(r3_series) == ["loop1", "loop2"]
    assert sum(r3_series["loop1"]) > 0
    assert sum(r3_series["loop2"][:2]) == 0, "loop 2 samples positives at IoU >= 0.6 only"
    chosen = default_rows(study)
    assert [r.row for _, r in chosen] == [1, 3]
    for path in draw(panels(study, chosen), study.root / "figures" / "fig3"):
        assert path.stat().st_size > 1000
