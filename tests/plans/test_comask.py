"""The CoMask paper: its three tables as plans (cited rows, test-dev rows, shared trainings), the
recipe and models as generated, and parameter counts that add up by part."""

from __future__ import annotations

import pytest

from sbrrepro.configs import build_config, full_scale
from sbrrepro.plan import load_plan
from tests.helpers import REPO, cli_json

COMASK = REPO / "plans" / "comask"
TABLES = [COMASK / f"table{n}.yaml" for n in range(1, 4)]


@pytest.mark.slow
def test_every_printed_row_dry_runs_with_cited_and_shared_rows(cli, tmp_path):
    study = str(tmp_path / "s")
    rows = {(r["plan"], r["row"]): r for r in cli_json("run", *map(str, TABLES), "--dry-run", "--study", study)}
    assert len(rows) == 11 + 3 + 2
    assert [n for (_, n), r in rows.items() if r["state"] == "cited"] == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    text = cli("run", *map(str, TABLES), "--dry-run", "--study", study).stdout
    assert "dry run: 7 row(s), 5 unique training(s), 2 evaluation-only job(s)" in text and "9 cited row(s)" in text
    baseline = rows["comask/table2", 3]["key"]
    assert rows["comask/table3", 1]["key"] == rows["comask/table1", 4]["train_key"] == baseline
    assert rows["comask/table1", 4]["eval_only"] and rows["comask/table1", 11]["eval_only"]


def test_the_published_tables_are_the_papers():
    table1, table3 = (load_plan(COMASK / f"table{n}.yaml").published for n in (1, 3))
    assert [table1[4][m] for m in ("segm_AP", "segm_AP50", "segm_APl")] == ["37.7", "59.0", "48.5"]
    assert table1[10]["segm_APl"] == "59.0" and table1[11]["segm_AP"] == "38.6"
    assert table3[2]["method"] == "w/o CL" and table3[2]["segm_AP"] == "37.0"
    assert load_plan(COMASK / "table2.yaml").published[1]["speed_fps"] == "4.4"


def test_the_recipe_and_models_as_generated(tmp_path):
    scale = full_scale(tmp_path / "coco")
    t1, t2, t3 = (load_plan(p) for p in TABLES)
    cfg = build_config(t2.row(3), scale)
    assert cfg["auto_scale_lr"]["base_batch_size"] == 8 and cfg["optim_wrapper"]["optimizer"]["lr"] == 0.01
    assert cfg["train_cfg"]["max_epochs"] == 24 and cfg["param_scheduler"][1]["milestones"] == [20, 23]
    assert cfg["param_scheduler"][0]["end"] == 1000 and cfg["param_scheduler"][0]["start_factor"] == 0.0125
    neck, head = cfg["model"]["neck"], cfg["model"]["roi_head"]
    # the four-branch rows: the code's MSFEM (its COCO run's work dir: ..._4branch_10convs_rca); one and two
    # branches, which the code cannot make: the paper's
    assert (neck["type"], neck["branches"], neck["variant"]) == ("MFPN", 4, "code")
    assert (head["type"], head["roi_pool"], head["collaborative"]) == ("CoMaskRoIHead", "drp", True)
    # the code's IoU loss in effect; the second pass on the refined box unclipped (the code's clamp is a no-op)
    assert head["mask_head"]["loss_bbox"] == dict(type="MeanProductIoULoss", floor=0.1, loss_weight=2.0)
    assert cfg["model"]["test_cfg"]["rcnn"]["clip_refined"] is False
    assert [build_config(t2.row(n), scale)["model"]["neck"]["variant"] for n in (1, 2)] == ["paper", "paper"]
    assert build_config(t2.row(1), scale)["model"]["neck"]["branches"] == 1
    without_cl = build_config(t3.row(2), scale)["model"]
    assert not without_cl["roi_head"]["collaborative"] and without_cl["neck"]["variant"] == "code"
    assert without_cl["roi_head"]["mask_head"]["loss_bbox"]["type"] == "MeanProductIoULoss"
    assert build_config(t1.row(4), scale)["model"] == cfg["model"]
    r101 = build_config(t1.row(11), scale)
    assert r101["optim_wrapper"]["optimizer"]["lr"] == 0.02 and r101["model"]["backbone"]["depth"] == 101
    assert r101["test_evaluator"]["format_only"]


def test_the_codes_msfem_below_three_branches_is_refused(tmp_path, cli):
    """The authors' module is the identity with 1 or 2 branches: a row asking for it is a bad plan."""
    from tests.helpers import copy_plan

    path = copy_plan(tmp_path, "comask/table2", rows=[1], **{"rows.0.options": {"branches": 1}})
    result = cli("run", str(path), "--dry-run", "--study", str(tmp_path / "s"))
    assert result.returncode == 2 and "identity below 3 branches" in result.stderr


@pytest.mark.training
def test_parameter_counts_add_up_by_part():
    """A second MSFEM branch is one 3x3 stride-2 conv (no bias) with its GroupNorm per level and a
    1x1 fuse conv twice as wide, at each of the five levels; "w/o CL" adds D2Det's one-channel
    foreground map (a 3x3 conv)."""
    pytest.importorskip("mmcv._ext")
    from sbrrepro.params import Counts

    counts = Counts()
    one, two, four = (counts(load_plan(TABLES[1]).row(n)) for n in (1, 2, 3))
    c = 256
    assert two - one == 5 * (9 * c * c + 2 * c + c * c) and four > two
    without_cl = counts(load_plan(TABLES[2]).row(2))
    assert without_cl - four == 9 * c + 1
