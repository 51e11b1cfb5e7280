"""Your own ablation: a plan of your own study (no published numbers) whose rows change the model's
config by dotted keys; each key is checked against the built config, the changes enter the key,
and the table shows ours and each row's difference against the baseline row."""

from __future__ import annotations

import pytest

from sbrrepro.configs import build_config, full_scale
from sbrrepro.plan import load_plan
from tests.helpers import REPO, cli_json, copy_plan

EXAMPLE = REPO / "plans" / "examples" / "loss-weights.yaml"


def test_overrides_reach_the_config_and_the_key(tmp_path):
    plan = load_plan(EXAMPLE)
    base, box, mask = (build_config(r, full_scale(tmp_path)) for r in plan.rows)
    head = box["model"]["roi_head"]
    assert head["bbox_head"]["loss_bbox"]["loss_weight"] == 2.0
    assert base["model"]["roi_head"]["bbox_head"]["loss_bbox"]["loss_weight"] == 1.0
    assert mask["model"]["roi_head"]["mask_head"]["loss_mask"]["loss_weight"] == 2.0


@pytest.mark.slow
def test_a_key_that_does_not_exist_is_one_clear_error(cli, tmp_path):
    path = copy_plan(tmp_path, "examples/loss-weights", **{"rows.1.cfg": {"model.roi_head.bbox_head.loss_box": 2}})
    result = cli("run", str(path), "--dry-run", "--study", str(tmp_path / "s"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'rows[1].cfg.model.roi_head.bbox_head.loss_box'" in result.stderr and "no such key" in result.stderr
    bad_baseline = copy_plan(tmp_path, "examples/loss-weights", name="b", baseline=9)
    result = cli("run", str(bad_baseline), "--dry-run", "--study", str(tmp_path / "s"))
    assert result.returncode == 2 and "'baseline'" in result.stderr


@pytest.mark.training
def test_the_example_trains_and_its_table_shows_the_deltas(cli, tmp_path):
    pytest.importorskip("mmcv._ext")
    study = str(tmp_path / "s")
    result = cli("run", str(EXAMPLE), "--smoke", "--epochs", "1", "--study", study, "--wait")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = {r["row"]: r for r in cli_json("collect", "--study", study)}
    baseline = rows[1]["metrics"]
    for n in (1, 2, 3):
        assert rows[n]["verdict"] == "own" and rows[n]["published"]["bbox_AP"] == baseline["bbox_AP"]
        assert rows[n]["diff"]["segm_AP"] == round(rows[n]["metrics"]["segm_AP"] - baseline["segm_AP"], 6)
    md = (tmp_path / "s" / "report" / "examples-loss-weights.md").read_text()
    assert "B_AP Row 1 | B_AP Ours | B_AP Δ" in md and "| 2 | box loss x2 |" in md


def _own_study(tmp_path, rows: list[dict], recipe: dict | None = None):
    import yaml

    plan = tmp_path / "mine.yaml"
    plan.write_text(yaml.safe_dump({"paper": "my-study", "table": "one", "title": "mine", "metrics": ["segm_AP"],
                                    "baseline": 1, **({"recipe": recipe} if recipe else {}), "rows": rows}))
    return plan


@pytest.mark.training
def test_a_base_config_keeps_its_own_schedule_and_takes_overrides(tmp_path, smoke):
    (tmp_path / "my_config.py").write_text("_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'\n"
                                           "optim_wrapper = dict(optimizer=dict(lr=0.01))\n")
    plan = load_plan(_own_study(tmp_path, [
        {"row": 1, "base": "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"},
        {"row": 2, "base": "my_config.py", "cfg": {"model.rpn_head.loss_bbox.loss_weight": 2.0}}]))
    stock, mine = (build_config(r, full_scale(tmp_path)) for r in plan.rows)
    assert stock["optim_wrapper"]["optimizer"]["lr"] == 0.02 and mine["optim_wrapper"]["optimizer"]["lr"] == 0.01
    assert mine["model"]["rpn_head"]["loss_bbox"]["loss_weight"] == 2.0
    assert stock["train_cfg"]["max_epochs"] == 12 and plan.rows[1].recipe["epochs"] == 12
    assert build_config(plan.rows[1], smoke)["model"]["backbone"]["depth"] == 18  # the smoke scale shrinks it


@pytest.mark.parametrize("rows, field, problem", [
    ([{"row": 1, "base": "mmdet::mask_rcnn/nothing.py"}], "rows[0].base", "MMDetection ships no such config"),
    ([{"row": 1, "base": "nowhere.py"}], "rows[0].base", "is missing"),
    ([{"row": 1, "model": "mask_rcnn"}], "rows[0].model", "needs the plan's recipe"),
    ([{"row": 1, "model": "mask_rcnn", "base": "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"}], "rows[0].base",
     "not both"),
])
@pytest.mark.slow
def test_bad_base_rows_are_one_clear_error(cli, tmp_path, rows, field, problem):
    result = cli("run", str(_own_study(tmp_path, rows)), "--dry-run", "--study", str(tmp_path / "s"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"'{field}'" in result.stderr and problem in result.stderr, result.stderr
