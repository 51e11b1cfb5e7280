"""Work done once: identical trainings across rows and plans share one key, and rows that differ
only at test time (SBR-CNN Table 4's evaluation loops) are evaluation-only jobs on that training."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, TABLE3, run_cli
from steps import copy_plan

TABLE4 = REPO / "plans" / "sbr-cnn" / "table4.yaml"


def test_tables_3_and_4_share_their_trainings(tmp_path, cli):
    result = cli("run", str(TABLE3), str(TABLE4), "--smoke", "--dry-run", "--json",
                 "--study", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    rows = {(r["plan"], r["row"]): r for r in json.loads(result.stdout)}
    t3, t4 = "sbr-cnn/table3", "sbr-cnn/table4"
    assert rows[(t3, 1)]["key"] == rows[(t4, 1)]["key"]  # the same Mask R-CNN
    trained = rows[(t3, 4)]["key"]  # R^3-CNN L_t = 3
    assert rows[(t4, 4)]["key"] == trained and not rows[(t4, 4)]["eval_only"]
    for n in (2, 3, 5, 6):
        assert rows[(t4, n)]["eval_only"] and rows[(t4, n)]["train_key"] == trained
    assert len({r["key"] for r in rows.values()}) == 9  # 5 trainings + 4 evaluations for 11 rows
    text = cli("run", str(TABLE3), str(TABLE4), "--smoke", "--dry-run",
               "--study", str(tmp_path / "s")).stdout
    assert "11 row(s), 5 unique training(s), 4 evaluation-only job(s); would submit 9 job(s)" in text


def test_an_evaluation_only_row_evaluates_the_shared_checkpoint(tmp_path):
    pytest.importorskip("mmcv._ext")
    plan = copy_plan(tmp_path, "sbr-cnn/table4", rows=[4, 6])  # L_e = 3 (trains) and L_e = 5 (evaluates)
    study = tmp_path / "study"
    args = ("run", str(plan), "--smoke", "--epochs", "1", "--study", str(study))
    first = run_cli(*args, "--wait", timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "submitted 2 job(s)" in first.stdout
    states = {s["row"]: s for s in json.loads(run_cli("status", "--study", str(study), "--json").stdout)}
    train, evaluation = study / "runs" / states[4]["key"], study / "runs" / states[6]["key"]
    done = json.loads((evaluation / "done.json").read_text())
    assert done["checkpoint"] == str(train / "epoch_1.pth")
    assert not list(evaluation.glob("epoch_*.pth")), "an evaluation-only job trains nothing"
    assert "coco/segm_mAP" in done["metrics"]
    rows = {r["row"]: r for r in json.loads(run_cli("collect", "--study", str(study), "--json").stdout)}
    assert rows[6]["metrics"]["segm_AP"] == round(100 * done["metrics"]["coco/segm_mAP"], 1)
    assert "submitted 0 job(s)" in run_cli(*args).stdout


def test_sharing_saves_what_the_shared_trainings_would_cost_again(tmp_path):
    """Tables 3 and 4 together: the Mask R-CNN (twice) and the 3-loop R^3-CNN (once in Table 3,
    five times in Table 4) are trained once each."""
    from sbrrepro.config_files import write_configs
    from sbrrepro.configs import full_scale
    from sbrrepro.costs import paper_estimate, summarize
    from sbrrepro.layout import StudyPaths
    from sbrrepro.plan import load_plan

    rows, paths = [], StudyPaths(tmp_path)
    for path in (TABLE3, TABLE4):
        plan = load_plan(path)
        rows += zip(plan.model_rows, write_configs(plan, full_scale(tmp_path / "coco"), paths))
    s, _ = summarize(rows, paths, "full")
    assert (s.rows, s.trainings, s.evaluations) == (11, 5, 4)
    mask, r3_three_loops = paper_estimate(rows[0][0]), paper_estimate(rows[3][0])
    assert s.hours_one_per_row - s.hours == pytest.approx(mask + 5 * r3_three_loops)
    assert s.hours == pytest.approx(sum(paper_estimate(r) for r, _ in rows[:5]))
