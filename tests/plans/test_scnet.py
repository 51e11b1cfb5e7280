"""The SCNet paper: its five tables as plans (cited rows, a derived line, test-dev rows, shared
trainings), the configs of its recipe and models, the semantic maps a full-scale study checks for, and
the test-dev path end to end on the embedded dataset: trained, detections zipped for the server,
"awaiting server", scored by the local stand-in, imported, collected."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from sbrrepro.configs import build_config, full_scale, smoke_scale
from sbrrepro.dataset import SEMANTIC_CLASSES, SyntheticSpec
from sbrrepro.plan import load_plan
from tests.helpers import DELETE, REPO, cli_json, copy_plan

SCNET = REPO / "plans" / "scnet"
TABLES = [SCNET / f"table{n}.yaml" for n in range(1, 6)]


def _rows(cli, tmp_path) -> tuple[dict[tuple[str, int], dict], str]:
    study = str(tmp_path / "s")
    listed = cli_json("run", *map(str, TABLES), "--dry-run", "--study", study)
    text = cli("run", *map(str, TABLES), "--dry-run", "--study", study).stdout
    return {(r["plan"], r["row"]): r for r in listed}, text


@pytest.mark.slow
def test_every_printed_row_dry_runs_with_cited_derived_and_shared_rows(cli, tmp_path):
    rows, text = _rows(cli, tmp_path)
    assert len(rows) == 15 + 7 + 3 + 4 + 6
    assert [n for (p, n), r in rows.items() if r["state"] == "cited"] == [2, 3, 4, 5, 6]
    assert rows["scnet/table2", 7]["state"] == "derived" and rows["scnet/table2", 7]["derived"] == "row 6 - row 1"
    assert "dry run: 29 row(s), 20 unique training(s), 10 evaluation-only job(s)" in text
    assert "5 cited row(s)" in text and "1 derived line(s)" in text

    def key(table: int, row: int) -> str:
        return rows[f"scnet/table{table}", row]["key"]

    assert key(2, 1) == key(3, 1) == key(4, 3) == rows["scnet/table1", 7]["train_key"]  # the baseline
    assert key(2, 2) == key(3, 3) and key(2, 3) == key(4, 4) and key(2, 5) == key(5, 1)
    assert key(2, 6) == key(5, 5) == rows["scnet/table1", 9]["train_key"]  # SCNet
    # Table 4's Mask R-CNN is Table 1's (no semantic branch); with the relay, still without the branch
    assert key(4, 1) == rows["scnet/table1", 1]["train_key"] and key(4, 2) != key(4, 1)
    assert all(rows["scnet/table1", n]["eval_only"] for n in (1, *range(7, 16)))


def test_the_published_tables_are_the_papers():
    table2 = load_plan(SCNET / "table2.yaml").published
    assert table2[6]["segm_AP"] == "39.8" and table2[7]["segm_AP"] == "+2.4" and table2[7]["bbox_AP"] == "+1.3"
    table1 = load_plan(SCNET / "table1.yaml").published
    assert [table1[14][m] for m in ("segm_AP", "segm_AP50", "segm_AP75", "segm_APs")] == \
        [table1[12][m] for m in ("segm_AP", "segm_AP50", "segm_AP75", "segm_APs")]  # as printed
    # not called a misprint: the HTC paper's own X101 numbers are within 0.1 of every printed one
    assert "plausible as printed" in load_plan(SCNET / "table1.yaml").row(14).note


def test_the_recipe_and_models_as_generated(tmp_path):
    scale = full_scale(tmp_path / "coco")
    t1, t2 = load_plan(SCNET / "table1.yaml"), load_plan(SCNET / "table2.yaml")
    scnet = build_config(t2.row(6), scale)
    assert scnet["optim_wrapper"]["optimizer"]["lr"] == 0.02 and scnet["auto_scale_lr"]["base_batch_size"] == 16
    assert scnet["train_cfg"]["max_epochs"] == 20 and scnet["param_scheduler"][1]["milestones"] == [16, 19]
    head = scnet["model"]["roi_head"]
    assert head["stage_loss_weights"] == [1, 0.5, 0.25] and head["glbctx_head"]["loss_weight"] == 3.0
    assert head["semantic_head"]["loss_seg"]["loss_weight"] == 0.2 and head["semantic_head"]["num_classes"] == 183
    assert scnet["model"]["test_cfg"]["rcnn"]["score_thr"] == 0.001
    prefix = scnet["train_dataloader"]["dataset"]["data_prefix"]
    assert prefix == dict(img="train2017/", seg="stuffthingmaps/train2017/")
    baseline = build_config(t2.row(1), scale)["model"]["roi_head"]
    assert (baseline["type"], baseline["interleaved"], baseline["mask_info_flow"]) == (
        "SemanticCascadeRoIHead", False, False)
    assert not any(h["with_conv_res"] for h in baseline["mask_head"])
    no_relay = build_config(t2.row(2), scale)["model"]["roi_head"]
    assert no_relay["type"] == "SCNetSwitchRoIHead" and "feat_relay_head" not in no_relay
    # "+SC" also swaps the semantic head (noted); semantic_head: htc builds the row with the baseline's
    assert (no_relay["semantic_head"]["type"], baseline["semantic_head"]["type"]) == (
        "SCNetSemanticHead", "FusedSemanticHead")
    path = copy_plan(tmp_path, "scnet/table2", rows=[2], **{"rows.0.options.semantic_head": "htc"})
    assert build_config(load_plan(path).rows[0], scale)["model"]["roi_head"]["semantic_head"] == \
        baseline["semantic_head"]
    # Table 4's Mask R-CNN with feature relay has no semantic branch (nor loads the maps)
    relay = build_config(load_plan(SCNET / "table4.yaml").row(2), scale)
    head = relay["model"]["roi_head"]
    assert "semantic_head" not in head and "feat_relay_head" in head and head["num_stages"] == 1
    assert "seg" not in relay["train_dataloader"]["dataset"]["data_prefix"]
    x101 = build_config(t1.row(15), scale)["model"]["backbone"]
    assert (x101["type"], x101["depth"], x101["groups"], x101["base_width"]) == ("ResNeXt", 101, 64, 4)
    # test-dev: images without annotations, detections written for the server; validated on val2017
    testdev = build_config(t1.row(9), scale)
    assert testdev["test_dataloader"]["dataset"]["ann_file"] == "annotations/image_info_test-dev2017.json"
    assert not [t for t in testdev["test_dataloader"]["dataset"]["pipeline"] if t["type"] == "LoadAnnotations"]
    assert testdev["test_evaluator"]["format_only"] and testdev["val_evaluator"]["ann_file"].endswith(
        "instances_val2017.json")


def test_at_smoke_scale_the_semantic_head_keeps_the_maps_classes(tmp_path):
    scale = smoke_scale(tmp_path / SyntheticSpec().folder_name())
    cfg = build_config(load_plan(SCNET / "table1.yaml").row(15), scale)
    head = cfg["model"]["roi_head"]
    assert head["semantic_head"]["num_classes"] == SEMANTIC_CLASSES and head["glbctx_head"]["num_classes"] == 3
    assert (cfg["model"]["backbone"]["type"], cfg["model"]["backbone"]["depth"]) == ("ResNet", 18)
    assert (head["feat_relay_head"]["in_channels"], head["feat_relay_head"]["out_conv_channels"]) == (256, 64)


@pytest.mark.slow
def test_a_full_scale_run_without_the_stuff_maps_says_so(cli, tmp_path):
    coco = tmp_path / "coco"
    for name in ("train2017", "val2017", "test2017"):
        (coco / name).mkdir(parents=True)
    (coco / "annotations").mkdir()
    for name in ("instances_train2017", "instances_val2017", "image_info_test-dev2017"):
        (coco / "annotations" / f"{name}.json").write_text("{}")
    study = tmp_path / "s"
    result = cli("run", str(SCNET / "table2.yaml"), "--data-root", str(coco), "--study", str(study))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "stuffthingmaps/train2017 is missing (COCO-stuff's stuffthingmaps_trainval2017.zip" in result.stderr
    assert not study.exists()  # nothing written


@pytest.mark.parametrize("change, problem", [
    ({"rows.1.model": "mask_rcnn"}, "has model and cited"),
    ({"rows.1.cited": DELETE}, "has none"),
    ({"rows.1.options": {"semantic": True}}, "a cited row runs nothing: it takes no options"),
])
def test_a_bad_cited_row_is_one_clear_error(cli, tmp_path, change, problem):
    path = copy_plan(tmp_path, "scnet/table1", rows=[1, 2], **change)
    result = cli("run", str(path), "--dry-run", "--study", str(tmp_path / "s"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'rows[1]" in result.stderr and problem in result.stderr, result.stderr


def test_a_derived_line_needs_rows_with_models(cli, tmp_path):
    path = copy_plan(tmp_path, "scnet/table2", rows=[1, 7], **{"rows.1.derived": [6, 1]})
    result = cli("run", str(path), "--dry-run", "--study", str(tmp_path / "s"))
    assert result.returncode == 2 and "'rows[1].derived'" in result.stderr and "row 6 is not a row" in result.stderr


@pytest.fixture(scope="module")
def testdev(tmp_path_factory):
    """Table 1 rows 1 (Mask R-CNN on test-dev) and 2 (cited), and Table 2 rows 1, 6 and 7 with Mask
    R-CNN for their models (row 6 another seed): its row 1 is Table 1 row 1's training. One epoch at
    smoke scale: 2 trainings and 1 evaluation for the server."""
    from tests.helpers import run_cli

    tmp = tmp_path_factory.mktemp("testdev")
    table1 = copy_plan(tmp, "scnet/table1", rows=[1, 2])
    table2 = copy_plan(tmp, "scnet/table2", rows=[1, 6, 7], **{
        "rows.0.model": "mask_rcnn", "rows.1.model": "mask_rcnn", "rows.1.recipe": {"seed": 1}})
    study = tmp / "study"
    first = run_cli("run", str(table1), str(table2), "--smoke", "--epochs", "1", "--study", str(study), "--wait",
                    timeout=900)
    return study, first


@pytest.mark.training
def test_test_dev_rows_await_the_server_then_import_its_stats(testdev, cli, tmp_path):
    pytest.importorskip("mmcv._ext")
    study, first = testdev
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "submitted 3 job(s)" in first.stdout
    assert "scnet/table1 row 1 awaits the evaluation server" in first.stdout
    states = {(s["plan"], s["row"]): s for s in cli_json("status", "--study", str(study))}
    awaiting = states["scnet/table1", 1]
    assert awaiting["state"] == "awaiting server" and states["scnet/table1", 2]["state"] == "cited"
    uploads = [Path(u) for u in awaiting["uploads"]]
    assert [u.name for u in uploads] == ["upload_bbox.zip", "upload_segm.zip"]
    for upload in uploads:
        with zipfile.ZipFile(upload) as z:
            assert z.namelist() == ["detections_test-dev2017_sbrrepro_results.json"]
            assert json.loads(z.read(z.namelist()[0]))  # detections of the withheld test images

    stats = tmp_path / "stats.json"
    assert cli("local-server", "scnet/table1:1", "--study", str(study), "--out", str(stats)).returncode == 0
    scored = json.loads(stats.read_text())
    assert set(scored) == {"bbox", "segm"} and all(len(v) == 12 for v in scored.values())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"segm": scored["segm"][:6]}))
    refused = cli("import-stats", "scnet/table1:1", str(bad), "--study", str(study))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in \
        refused.stderr
    imported = cli("import-stats", "scnet/table1:1", str(stats), "--study", str(study))
    assert imported.returncode == 0, imported.stderr
    assert cli_json("status", "--study", str(study))[0]["state"] == "done"

    rows = {(r["plan"], r["row"]): r for r in cli_json("collect", "--study", str(study))}
    assert rows["scnet/table1", 1]["metrics"]["segm_AP"] == round(100 * scored["segm"][0], 1)
    assert rows["scnet/table1", 1]["metrics"]["bbox_AP"] == round(100 * scored["bbox"][0], 1)
    cited = rows["scnet/table1", 2]
    assert cited["verdict"] == "cited" and cited["metrics"] == {} and cited["published"]["segm_AP"] == 36.6
    one, six, improvement = (rows["scnet/table2", n]["metrics"] for n in (1, 6, 7))
    assert improvement and improvement == {m: round(six[m] - one[m], 6) for m in improvement}
    report = (study / "report" / "scnet-table1.md").read_text()
    assert "cited (Liu et al." in report


@pytest.mark.training
def test_parameter_counts_add_up_by_part():
    """`sbrrepro params` counts: a feature relay module is the Linear from the 1024-d box feature to
    256x7x7; the cascade with relay has one per stage, SCNet one; global context adds the same to
    the cascade as to SCNet."""
    pytest.importorskip("mmcv._ext")
    from sbrrepro.params import Counts

    rows = load_plan(SCNET / "table2.yaml")
    counts = Counts()
    baseline, sc, fr, gc, sc_fr, scnet = (counts(rows.row(n)) for n in range(1, 7))
    relay = 1024 * 256 * 7 * 7 + 256 * 7 * 7
    assert sc_fr - sc == relay and fr - baseline == 3 * relay
    assert gc - baseline == scnet - sc_fr
