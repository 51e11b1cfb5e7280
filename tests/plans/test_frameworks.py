"""The MMDetection a paper's numbers came from (a recipe's `framework`): each row's written config holds
the settings of that era which its model takes; `run --framework` builds another's, and such rows are
footnoted; the setup table and each table's note say which framework's settings the rows use."""

from __future__ import annotations

import dataclasses
import json
import runpy
import time
from pathlib import Path

import pytest

from sbrrepro import jobs
from sbrrepro.cli import main
from sbrrepro.collect import paper_settings, plan_results, table_of
from sbrrepro.config_files import write_configs
from sbrrepro.configs import build_config, full_scale, keyed_config
from sbrrepro.params import Counts
from sbrrepro.plan import load_plan
from sbrrepro.report import setup
from sbrrepro.study import Study
from sbrrepro.zoo import MODELS
from sbrrepro.zoo._frameworks import ALL, MARKER
from tests.helpers import PLANS, REPO, plan_files, write_scalars


def written(path: str | Path) -> dict:
    """A written config's fields, as the file assigns them (no custom imports: no torch)."""
    return {k: v for k, v in runpy.run_path(str(path)).items() if not k.startswith("__")}


def _dicts(node, type_name: str) -> list[dict]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == type_name:
            found.append(node)
        for v in node.values():
            found += _dicts(v, type_name)
    elif isinstance(node, list):
        for v in node:
            found += _dicts(v, type_name)
    return found


def assert_1x(model: dict) -> None:
    """The settings of MMDetection's legacy_1.x/mask-rcnn_r50_fpn_1x_coco_v1.py, and 1.x's allowed_border 0."""
    rpn, roi, train = model["rpn_head"], model["roi_head"], model["train_cfg"]
    assert rpn["loss_bbox"] == dict(type="SmoothL1Loss", beta=1.0 / 9.0, loss_weight=1.0)
    assert roi["bbox_head"]["loss_bbox"] == dict(type="SmoothL1Loss", beta=1.0, loss_weight=1.0)
    assert train["rpn_proposal"]["max_per_img"] == 2000
    assert train["rpn"]["allowed_border"] == 0
    assert train["rcnn"]["assigner"]["match_low_quality"] is True
    assert rpn["anchor_generator"]["type"] == "LegacyAnchorGenerator"
    assert rpn["anchor_generator"]["center_offset"] == 0.5
    assert rpn["bbox_coder"]["type"] == roi["bbox_head"]["bbox_coder"]["type"] == "LegacyDeltaXYWHBBoxCoder"
    aligns = _dicts(model, "RoIAlign")
    assert aligns and all(a["aligned"] is False and a["sampling_ratio"] == 2 for a in aligns)


def _dry_run(study: Path, *extra: str, capsys) -> list[dict]:
    assert main(["run", str(PLANS / "groie" / "table2.yaml"), "--dry-run", "--json", "--study", str(study),
                 *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_groie_table2s_written_configs_hold_the_1x_settings_and_framework_3_3_builds_3_3s(tmp_path, capsys):
    rows = _dry_run(tmp_path / "paper", capsys=capsys)
    assert [r["row"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        cfg = written(r["config"])
        assert_1x(cfg["model"])
        assert cfg[MARKER] == {"era": "mmdet-1.x", "settings": list(ALL)}
        if r["row"] > 1:  # GRoIE's own per-level RoIAlign too
            assert cfg["model"]["roi_head"]["bbox_roi_extractor"]["type"] == "GRoIE"
    stock = _dry_run(tmp_path / "stock", "--framework", "mmdet-3.3", capsys=capsys)
    for paper, ours in zip(rows, stock):
        cfg = written(ours["config"])
        model = cfg["model"]
        assert ours["key"] != paper["key"] and MARKER not in cfg
        assert model["rpn_head"]["loss_bbox"]["type"] == model["roi_head"]["bbox_head"]["loss_bbox"]["type"] == "L1Loss"
        assert model["train_cfg"]["rpn_proposal"]["max_per_img"] == 1000
        assert model["rpn_head"]["anchor_generator"]["type"] == "AnchorGenerator"
        assert all(a.get("aligned", True) for a in _dicts(model, "RoIAlign"))


def test_each_paper_takes_its_eras_settings_as_far_as_its_models_do(tmp_path):
    scale = full_scale(tmp_path / "coco")

    def built(table: str, number: int) -> dict:
        return build_config(load_plan(PLANS / table).row(number), scale)

    assert_1x(built("scnet/table1.yaml", 1)["model"])  # Mask R-CNN on the paper's 1.x
    for table, number in (("groie/table5.yaml", 3), ("scnet/table1.yaml", 9)):  # Grid R-CNN, SCNet: as shipped
        cfg = built(table, number)
        assert MARKER not in cfg and cfg["model"]["rpn_head"]["loss_bbox"]["type"] == "SmoothL1Loss"
    relay = built("scnet/table4.yaml", 2)  # HTC-built, beside row 1's stock Mask R-CNN: the same era's settings
    assert relay[MARKER]["settings"] == list(ALL)
    rcnn = relay["model"]["train_cfg"]["rcnn"]
    assert all(stage["assigner"]["match_low_quality"] for stage in (rcnn if isinstance(rcnn, list) else [rcnn]))
    assert relay["model"]["rpn_head"]["anchor_generator"]["type"] == "LegacyAnchorGenerator"
    comask = built("comask/table2.yaml", 3)
    assert comask[MARKER]["settings"] == ["rpn_loss", "allowed_border"]
    assert comask["model"]["rpn_head"]["loss_bbox"]["type"] == "SmoothL1Loss"
    assert comask["model"]["train_cfg"]["rpn"]["allowed_border"] == 0
    assert comask["model"]["rpn_head"]["anchor_generator"]["type"] == "AnchorGenerator"
    for table in ("sbr-cnn/table2.yaml", "ms-subnet/table3.yaml"):  # 2.8's defaults are 3.3's; not MMDetection
        for row in load_plan(PLANS / table).model_rows:
            cfg = build_config(row, scale)
            assert MARKER not in cfg
            if row.model in ("mask_rcnn", "ms_subnet_mask_rcnn"):  # (HTC's and R3-CNN's keep HTC's SmoothL1)
                model = cfg["model"]
                assert model["rpn_head"]["loss_bbox"]["type"] == "L1Loss", (table, row.number)
                assert model["roi_head"]["bbox_head"]["loss_bbox"]["type"] == "L1Loss", (table, row.number)


def test_framework_3_3_changes_the_keys_of_exactly_the_rows_that_took_an_eras_settings(tmp_path):
    scale = full_scale(tmp_path / "coco")
    stock = dataclasses.replace(scale, framework="mmdet-3.3")
    changed = set()
    for path in plan_files():
        plan = load_plan(path)
        for row in plan.model_rows:
            paper, built = keyed_config(row, scale), keyed_config(row, stock)
            assert MARKER not in built[1]
            assert (paper[0] != built[0]) == bool(paper_settings(row)), (plan.name, row.number)
            if paper[0] != built[0]:
                changed.add((plan.paper, row.model))
    assert changed == {("groie", "faster_rcnn"), ("groie", "mask_rcnn"), ("scnet", "mask_rcnn"),
                       ("scnet", "mask_rcnn_semantic"), ("comask", "comask")}


def test_a_bad_framework_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["run", str(PLANS / "groie" / "table2.yaml"), "--dry-run", "--study", str(tmp_path),
              "--framework", "mmdet-2.0"])
    assert "--framework" in capsys.readouterr().err


PLAN = """
paper: crafted
table: "1"
title: Crafted
metrics: [bbox_AP]
tolerance: 0.5
published: published.csv
recipe_file: {recipe}
rows:
  - {{row: 1, model: faster_rcnn}}
  - {{row: 2, model: faster_rcnn, options: {{groie: true}}}}
  - {{row: 3, model: grid_rcnn, recipe: {{clip_grad: 0}}}}
"""


def test_a_row_built_with_another_frameworks_settings_is_footnoted_and_the_setup_says_which(tmp_path):
    (tmp_path / "plan.yaml").write_text(PLAN.format(recipe=REPO / "plans" / "groie" / "recipe.yaml"))
    (tmp_path / "published.csv").write_text("row,method,bbox_AP\n1,Faster,36.5\n2,GRoIE,37.5\n3,Grid,39.1\n")
    plan = load_plan(tmp_path / "plan.yaml")
    study = Study.open(tmp_path / "study", "full", create=True)
    configs = write_configs(plan, full_scale(tmp_path / "coco"), study.paths)
    study.register((plan.path, configs))
    for rc, bbox in zip(configs, (0.365, 0.375, 0.391)):
        cfg = written(rc.path)
        run = study.paths.run(rc.key)
        write_scalars(run, [{"loss": 1.0, "epoch": 12, "iter": 1, "step": 1}, {"coco/bbox_mAP": bbox, "step": 12}])
        # row 2 as `run --framework mmdet-3.3` trains it: none of 1.x's settings
        marker = None if rc.row == 2 else cfg.get(MARKER)
        run.provenance.write_text(json.dumps({
            "lr_scaled": False, "started": time.time() - 3600, "processes": 6, "gpus": 6, "device": "Tesla V100",
            "batch": 12, "lr_effective": 0.015, "seed": 0, "versions": {"mmdet": "3.3.0"}, MARKER: marker}))
        run.done.write_text(json.dumps({"epochs": 12, "finished": time.time()}))
    states = {s.key: s for s in jobs.states(study, configs)}
    results = plan_results(study, plan, {rc.row: [rc] for rc in configs},
                           {(rc.plan, rc.row, rc.seed): states[rc.key] for rc in configs}, Counts(study.paths.params))
    assert [r.differences for r in results] == [(), ("framework",), ()]
    table = table_of(plan, results, "full", "coco2017")
    assert [mark for mark, _ in table.footnotes] == ["‖"] and "‖" in table.rows[1].verdict_text()
    (note,) = [n for n in table.notes if n.startswith("Model settings")]
    assert "rows 1-2: mmdet-1.x: RPN SmoothL1 (beta 1/9), R-CNN SmoothL1 (beta 1)" in note
    assert "row 3: mmdet-1.x: MMDetection 3.3's defaults" in note
    paper_1x = "mmdet-1.x: RPN SmoothL1 (beta 1/9), R-CNN SmoothL1 (beta 1), 2000 training proposals"
    assert setup(results[0])["framework"].startswith(paper_1x)
    assert setup(results[1])["framework"].startswith("MMDetection 3.3's defaults / " + paper_1x)
    assert MODELS["grid_rcnn"].era_settings == ()
