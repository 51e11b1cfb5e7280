"""sbrrepro.layout: every file of a study and of a run has one stable name inside its folder (studies made
before keep working, and a copied study keeps its files), and the module stays light for compute nodes."""

from __future__ import annotations

import json

from sbrrepro.layout import RunPaths, StudyPaths, sizes_key
from tests.helpers import imported_by

STUDY_FILES = {"meta": "study.json", "state": "state.sqlite", "rows": "rows.json", "submit_lock": ".submit.lock",
               "configs": "configs", "config_cache": "configs/.cache.json", "arrays": "arrays", "data": "data",
               "results": "results.json", "results_csv": "results.csv", "results_parquet": "results.parquet",
               "site": "report/site", "costs": "costs.json", "params": "params.json", "speed": "speed.json",
               "preflight": "preflight.json", "preflight_jobs": "preflight"}
RUN_FILES = {"done": "done.json", "provenance": "provenance.json", "started": "started",
             "histograms": "iou_histograms.json", "submitit": "submitit", "detections_prefix": "detections",
             "server_stats": "server_stats.json"}


def test_a_studys_files_have_stable_names_inside_it(tmp_path):
    paths = StudyPaths(tmp_path / "s")
    assert {name: str(getattr(paths, name).relative_to(paths.root)) for name in STUDY_FILES} == STUDY_FILES
    assert paths.run("r3_cnn-abc").root == paths.root / "runs" / "r3_cnn-abc"
    assert paths.config("sbr-cnn/table3", 4, "-train", "1f2e") == paths.configs / "sbr-cnn-table3-row4-train-1f2e.py"
    assert paths.report("sbr-cnn/table3", ".md") == paths.root / "report" / "sbr-cnn-table3.md"
    assert paths.figure("groie/fig2") == paths.root / "figures" / "groie-fig2"
    assert StudyPaths.manifest(paths.arrays / "a") == paths.arrays / "a" / "keys.json"
    assert StudyPaths(tmp_path / "s") == paths, "a value: equal for the same folder"


def test_a_runs_files_have_stable_names_inside_its_work_dir(tmp_path):
    run = RunPaths(tmp_path / "run")
    assert {name: str(getattr(run, name).relative_to(run.root)) for name in RUN_FILES} == RUN_FILES
    assert run.checkpoint(3) == run.root / "epoch_3.pth" and run.checkpoint(4, "iter") == run.root / "iter_4.pth"
    assert run.detections("segm") == run.root / "detections.segm.json"  # CocoMetric's outfile_prefix + type
    assert run.upload("bbox") == run.root / "upload_bbox.zip"
    assert sizes_key("r3_cnn-abc") == "r3_cnn-abc-sizes"


def test_a_run_knows_its_final_checkpoint_once_done_and_its_logs_oldest_first(tmp_path):
    run = RunPaths(tmp_path / "run")
    assert run.final_step() is None and run.final_checkpoint() is None and run.uploads() == []
    run.root.mkdir()
    run.done.write_text(json.dumps({"finished": 1.0, "epochs": 12}))
    assert run.final_step() == (12, "epoch") and run.final_checkpoint() == run.root / "epoch_12.pth"
    run.done.write_text(json.dumps({"finished": 1.0, "iters": 4}))
    assert run.final_step() == (4, "iter") and run.final_checkpoint() == run.root / "iter_4.pth"
    for stamp in ("20260102_000000", "20260101_000000"):
        (run.root / stamp / "vis_data").mkdir(parents=True)
        (run.root / stamp / "vis_data" / "scalars.json").write_text("")
    assert [p.parts[-3] for p in run.scalars()] == ["20260101_000000", "20260102_000000"]
    for iou in ("segm", "bbox"):
        run.upload(iou).write_bytes(b"PK")
    assert run.uploads() == [run.upload("bbox"), run.upload("segm")]


def test_layout_imports_only_what_a_compute_node_has():
    out = imported_by("sbrrepro.layout", ("sbrrepro",))
    assert set(out) <= {"sbrrepro", "sbrrepro.layout", "sbrrepro.study_files", "sbrrepro.reader",
                                "sbrrepro.errors", "sbrrepro.vocabulary"}, out
