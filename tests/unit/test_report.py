"""sbrrepro.report: the report page of the crafted study (a real failed job's log, the setups, the
config changes against the baseline row, the cited row), its summary's hours by each training's
state, its figures' captions, and the config diff it shows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sbrrepro import jobs
from sbrrepro.config_files import write_configs
from sbrrepro.configs import full_scale
from sbrrepro.plan import load_plan
from sbrrepro.report import config_diff, flat_config
from tests.helpers import REPO, finish_run


@pytest.mark.training  # submits a job
def test_the_report_page_of_crafted_results_with_a_real_failed_job(crafted, cli):
    """Row 3 really fails (its COCO is missing): the page shows its log's end, beside the summary,
    the setups, the config changes against the baseline row and the cited row."""
    from sbrrepro.cluster import FAILED as JOB_FAILED
    from sbrrepro.cluster.local import LocalExecutor
    from tests.helpers import settle

    _, study, _ = crafted
    (rc,) = [rc for _, rc in study.rows() if rc.row == 3]
    executor = LocalExecutor()
    (submitted,) = jobs.submit(study, [rc], executor)
    sub = study.submissions()[submitted]
    assert settle(executor, sub.job_id, sub.folder, timeout=300) == JOB_FAILED
    result = cli("report", "--study", str(study.root))
    assert result.returncode == 0, result.stderr[-3000:]
    page = (study.root / "report" / "site" / "crafted.html").read_text()
    md = (study.root / "report" / "site" / "crafted.md").read_text()
    for text in (page, md):
        assert "Rows reproduced: 1 of 5 run (5 judged against the paper; 8 rows in all; full scale on coco2017)" in text
        assert "reproduced: 1, not reproduced: 2, within tolerance, other setup: 2, not run: 1, failed: 1, cited: 1" \
            in text
        assert "crafted/table1 row 3: R2 (seed 0)" in text and "FileNotFoundError" in text  # the log's end
        assert "Other et al. 2020" in text
        assert "3 (0, 1, 2) / 1" in text and "8 (Tesla V100, 8 processes) / 8" in text and "0.04 / 0.02" in text
        assert "mmdet 3.3.0, mmcv 2.1.0" in text and "abc1234" in text
    assert "<details><summary>crafted/table1 row 2: Naive against row 1: " in page
    assert "- **crafted/table1 row 2: Naive** against row 1: \n  - `model.backbone.plugins.0.cfg.type`: (absent) → " \
           "\"ContextBlock\"" in md


# ---- the report page's summary, its figures' captions ---------------------------------------------
FIGURE = """
paper: crafted
table: fig2
title: IoU distribution of the positive training RoIs
metrics: []
figure: iou_histograms
recipe_file: {recipe}
rows:
  - {{row: 1, model: mask_rcnn, recipe: {{epochs: 36, lr_steps: [28, 34]}}}}
"""


@pytest.fixture
def with_figure(crafted, tmp_path):
    """The crafted study with every table row's training finished, and a figure plan whose one row
    is a training of its own (Mask R-CNN 3x, as SBR-CNN's Fig. 3), its IoU histograms recorded."""
    _, study, _ = crafted
    for _, rc in study.rows():
        if rc.row in (3, 4):  # failed and running in `crafted`'s states, new in its folders
            finish_run(study, rc.key, 0.404, 0.367)
    (tmp_path / "fig2.yaml").write_text(FIGURE.format(recipe=REPO / "plans" / "sbr-cnn" / "recipe.yaml"))
    figure = load_plan(tmp_path / "fig2.yaml")
    (rc,) = write_configs(figure, full_scale(tmp_path / "coco"), study.paths)
    study.register((figure.path, [rc]))
    run = study.paths.run(rc.key)
    run.root.mkdir(parents=True)
    edges = {"proposals": [i / 20 for i in range(21)], "positives": [0.5 + i / 20 for i in range(11)]}
    run.histograms.write_text(json.dumps({p: {"bin_edges": e, "epochs": {"1": {"rcnn": list(range(len(e) - 1))}}}
                                          for p, e in edges.items()}))  # as IoUHistogramHook writes them
    return study, rc


@pytest.fixture(params=["done", "running", "failed"])
def figure_training(request, with_figure):
    """The figure row's training in each state, as `status` finds it: finished, or a recorded local
    job whose controller still runs (its training holding a slot), or ended without a result."""
    study, rc = with_figure
    run, alive = study.paths.run(rc.key), None
    if request.param == "done":
        finish_run(study, rc.key, 0.392, 0.356, epochs=36)
    else:
        run.submitit.mkdir()
        if request.param == "running":
            alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(run.submitit)])
            run.started.touch()
            job_id = str(alive.pid)
        else:
            ended = subprocess.Popen(["true"])
            ended.wait()
            job_id = str(ended.pid)
            (run.submitit / f"{job_id}_0_log.err").write_text("RuntimeError: CUDA out of memory\n")
        (run.submitit / f"{job_id}{jobs.SUBMITTED}").touch()
        study.record("local", [(rc.key, str(rc.path), job_id, run.submitit)])
    yield study, request.param
    if alive is not None:
        alive.kill()
        alive.wait()


@pytest.mark.slow
def test_the_report_summary_counts_every_training_as_status_shows_it(figure_training):
    """Hours spent and still to spend count every training of the paper's plans, the figure plan's
    included, by its state: a study whose every row is done has nothing left to spend; a running
    or a failed training is still to spend (`run --retry-failed` trains a failed one again)."""
    from sbrrepro.collect import collect
    from sbrrepro.report import page, to_html_page, to_markdown_page

    study, state = figure_training
    p = page(study, collect(study), "crafted")
    states = {s.state for s in jobs.states(study, [rc for _, rc in study.rows()])}
    summary = p.summary
    if state == "done":
        assert states == {"done"}, "`status` shows every row done"
        assert (summary["trainings_to_run"], summary["to_spend"]) == (0, 0)
        assert summary["not_finished"] == {}
        assert summary["spent"] == pytest.approx(9 * 8, abs=0.1)  # 9 trainings of 1 h on 8 processes each
        assert p.unfinished == []
        line = "GPU-hours spent: 72.00; still to spend: 0.00 (0 training(s) not finished)."
    else:
        assert states == {"done", state}
        assert (summary["trainings_to_run"], summary["to_spend"]) == (1, 280.0)
        assert summary["not_finished"] == {state: 1}
        assert summary["spent"] == pytest.approx(8 * 8, abs=0.1)  # Mask R-CNN 3x: 35 h on 8 V100s, still to spend
        line = f"GPU-hours spent: 64.00; still to spend: 280.00 (1 training(s) not finished: 1 {state})."
        (name, shown, log), = p.unfinished
        assert (name, shown) == ("crafted/fig2 row 1: mask_rcnn (seed 0)", state)
        assert (log or "").endswith("CUDA out of memory") == (state == "failed")
    if state == "failed":
        line += " A failed training is still to spend: `sbrrepro run --retry-failed` trains it again."
    for text in (to_html_page(p), to_markdown_page(p, study.paths.site)):
        assert line in text


@pytest.mark.slow
def test_a_figures_caption_names_the_population_it_draws(with_figure, tmp_path, monkeypatch):
    """Fig. 2 (as SBR-CNN's Fig. 3) draws every proposal at the assigner by default: its title and its
    caption on the report page say so, not the plan's "positive training RoIs"; `plot-iou
    --population positives` titles its figure after the positives."""
    from sbrrepro.collect import collect
    from sbrrepro.figures import iou_histograms
    from sbrrepro.report import page, to_html_page, to_markdown_page

    study, rc = with_figure
    finish_run(study, rc.key, 0.392, 0.356, epochs=36)
    drawn = []
    real_save = iou_histograms.save
    monkeypatch.setattr(iou_histograms, "save", lambda fig, out: (drawn.append(fig), real_save(fig, out))[1])
    p = page(study, collect(study), "crafted")
    proposals = "IoU distribution of the proposals at the assigner"
    assert p.figures[0] == (f"crafted fig2: {proposals}", study.paths.figure("crafted/fig2").with_suffix(".png"))
    assert drawn[-1].get_suptitle() == proposals and drawn[-1].axes[0].get_xlim() == (0.0, 1.0)
    for text in (to_html_page(p), to_markdown_page(p, study.paths.site)):
        assert f"crafted fig2: {proposals}" in text and "positive training RoIs" not in text

    iou_histograms.draw(study.paths, [(load_plan(tmp_path / "fig2.yaml"), rc)], tmp_path / "positives", "positives")
    assert drawn[-1].get_suptitle() == "IoU distribution of the positive training RoIs"
    assert drawn[-1].axes[0].get_xlim() == (0.5, 1.0)


def test_the_config_diff_puts_the_modules_types_first(tmp_path):
    """A generated config as dotted keys (a list of dicts by index, any other list whole); against the
    baseline's, every key that differs, a missing one None, the `.type` keys first."""
    base, row = tmp_path / "base.py", tmp_path / "row.py"
    base.write_text("model = {'type': 'MaskRCNN', 'backbone': {'depth': 50, 'plugins': []}}\n"
                    "optim_wrapper = {'optimizer': {'lr': 0.02}}\nlr_steps = [8, 11]\n")
    row.write_text("model = {'type': 'MaskRCNN',\n"
                   "         'backbone': {'depth': 50, 'plugins': [{'cfg': {'type': 'ContextBlock'}}]}}\n"
                   "optim_wrapper = {'optimizer': {'lr': 0.04}}\nlr_steps = [8, 11]\n")
    assert flat_config(base) == {"model.type": "MaskRCNN", "model.backbone.depth": 50, "model.backbone.plugins": [],
                                 "optim_wrapper.optimizer.lr": 0.02, "lr_steps": [8, 11]}
    assert config_diff(row, base) == [("model.backbone.plugins.0.cfg.type", None, "ContextBlock"),
                                      ("model.backbone.plugins", [], None), ("optim_wrapper.optimizer.lr", 0.02, 0.04)]
    assert config_diff(base, base) == []
