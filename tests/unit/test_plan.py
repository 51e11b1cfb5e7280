"""Plans: the Table 3 plan is what the paper says, and malformed plans fail cleanly (exit 2, one
line naming the file and the field, no traceback, nothing written)."""

from __future__ import annotations

import pytest

from sbrrepro.errors import UserError
from sbrrepro.plan import load_plan
from tests.helpers import DELETE, REPO, TABLE3, copy_plan


def test_table3_plan_matches_the_paper():
    plan = load_plan(TABLE3)
    assert plan.name == "sbr-cnn/table3"
    assert [r.number for r in plan.rows] == [1, 2, 3, 4, 5]
    assert [r.model for r in plan.rows] == ["mask_rcnn"] + ["r3_cnn"] * 4
    for row in plan.rows:
        published = plan.published[row.number]
        if row.model == "r3_cnn":
            # the descriptive columns of the published table agree with what the row trains
            assert int(published["L_t"]) == row.options["loops"] == row.options["eval_loops"]
            assert int(published["H"]) == len(set(row.options["alternation"]))
            assert row.options["iou_thresholds"] == [0.5, 0.6, 0.7, 0.8][: row.options["loops"]]
        assert row.recipe["epochs"] == 12 and row.recipe["lr_steps"] == [8, 11]
        assert row.recipe["nodes"] * row.recipe["gpus_per_node"] * row.recipe["images_per_gpu"] == 16
    assert plan.published[4] == {"model": "R^3-CNN", "L_t": "3", "H": "1", "bbox_AP": "40.9", "segm_AP": "37.2"}


MUTATIONS = [
    ("colour", "red", "'colour'", "unknown field"),
    ("recipe", {"epochs": "twelve"}, "'recipe.epochs'", "expected an integer"),
    ("recipe", {"optimizer": {"lr": -1}}, "'recipe.optimizer.lr'", "must be > 0"),
    ("recipe_file", "none.yaml", "'recipe_file'", "cannot read"),
    ("rows.0.model", "yolo", "'rows[0].model'", "'yolo' is not one of"),
    ("rows.1.options", {"loops": 9}, "'rows[1].options.loops'", "between 1 and 5"),
    ("rows.1.options", {"heads": 2}, "'rows[1].options.heads'", "unknown field"),
    ("rows.2.options", {"loops": 2, "iou_thresholds": [0.5]}, "'rows[2].options'", "one per training loop"),
    ("published", "../../tables/sbr-cnn/none.csv", "'published'", "cannot read"),
    ("metrics", ["bbox_AP", "box_ap"], "'metrics'", "unknown metric 'box_ap'"),
    ("rows.3.row", 9, "'rows[3].row'", "no line in"),
    ("title", DELETE, "'title'", "missing"),
    ("table", "../../etc/x", "'table'", "letters, digits"),
    ("figure", "pie", "'figure'", "'pie' is not one of"),
    ("seeds", [0, 0], "'seeds'", "distinct seeds"),
    ("rows.1.seeds", [], "'rows[1].seeds'", "at least one"),
]


def _assert_clean_failure(result, path, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in lines[0]
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(("field", "value", "named", "problem"), MUTATIONS)
def test_malformed_plan_fails_cleanly(tmp_path, cli, field, value, named, problem):
    path = copy_plan(tmp_path, "sbr-cnn/table3", name="bad", **{field: value})
    study = tmp_path / "study"
    result = cli("run", str(path), "--smoke", "--dry-run", "--study", str(study))
    _assert_clean_failure(result, path, named, problem)
    assert not study.exists(), "a bad plan must leave nothing written"


@pytest.mark.slow
def test_bad_yaml_and_missing_file(tmp_path, cli):
    path = copy_plan(tmp_path, "sbr-cnn/table3", name="bad", text="paper: sbr-cnn\nrows: [\n")
    _assert_clean_failure(cli("run", str(path), "--dry-run", "--study", str(tmp_path / "s")), path,
                          "not valid YAML", "line")
    missing = tmp_path / "plans" / "nope.yaml"  # in no paper's folder either
    _assert_clean_failure(cli("run", str(missing), "--dry-run", "--study", str(tmp_path / "s")), missing,
                          "cannot read the plan")
    assert not (tmp_path / "s").exists()


def test_a_flat_plan_path_the_main_paper_lacks_names_the_papers_that_have_it(cli, tmp_path):
    """`plans/<name>.yaml` is SBR-CNN's plan of that name (tests/unit/test_cli.py); for a name it has not,
    one line names the papers' plans of that name."""
    result = cli("run", "plans/fig2.yaml", "--smoke", "--dry-run", "--study", str(tmp_path / "s"))
    _assert_clean_failure(result, "plans/fig2.yaml", "plans/fig2.yaml: plans are per paper now: use ",
                          "plans/groie/fig2.yaml")
    assert not (tmp_path / "s").exists()
    with pytest.raises(UserError, match="plans are per paper now: use ") as e:
        load_plan(REPO / "plans" / "fig4.yaml")
    assert e.value.message.endswith(str(REPO / "plans" / "groie" / "fig4.yaml"))


def test_a_bad_layer_index_of_table1_fails_cleanly(tmp_path, cli):
    path = copy_plan(tmp_path, "sbr-cnn/table1", name="bad", **{"rows.3.options": {"head": "7x3-3x7", "layer": 4}})
    _assert_clean_failure(cli("params", str(path)), path, "'rows[3].options'", "has 4 shared layers (0-3)")


def test_a_row_level_split_is_the_rows_own(tmp_path, cli):
    """A row's own recipe splits reach its config, and `run` checks them, row by row."""
    from sbrrepro.configs import build_config, full_scale

    path = copy_plan(tmp_path, "sbr-cnn/table3", rows=[1, 2], **{"rows.1.recipe": {"eval_split": "minival2014"}})
    first, second = load_plan(path).rows
    coco = tmp_path / "coco"
    assert build_config(first, full_scale(coco))["val_evaluator"]["ann_file"].endswith("instances_val2017.json")
    assert build_config(second, full_scale(coco))["test_dataloader"]["dataset"]["ann_file"] == \
        "annotations/instances_minival2014.json"
    for split in ("train2017", "val2017"):  # what row 1 needs, and row 2's training split
        (coco / split).mkdir(parents=True)
        (coco / "annotations").mkdir(exist_ok=True)
        (coco / "annotations" / f"instances_{split}.json").write_text("{}")
    study = tmp_path / "study"
    result = cli("run", str(path), "--data-root", str(coco), "--study", str(study))
    _assert_clean_failure(result, path, "'rows[1].recipe'", "instances_minival2014.json is missing")
    assert not study.exists()


def test_second_bad_plan_stops_the_first_from_writing(tmp_path, cli):
    bad = copy_plan(tmp_path, "sbr-cnn/table3", name="bad", text="paper: ../nature\n")
    result = cli("run", str(TABLE3), str(bad), "--smoke", "--dry-run", "--study", str(tmp_path / "s"))
    _assert_clean_failure(result, bad, "'paper'", "'../nature': use letters")
    assert not (tmp_path / "s").exists()


def test_user_error_message_names_file_and_field():
    assert str(UserError("plans/x.yaml", "rows[0].model", "bad")) == "plans/x.yaml: field 'rows[0].model': bad"
