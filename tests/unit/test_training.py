"""sbrrepro.training, what a job runs on its node: the schedule it trains (an iteration schedule scaled to
the paper's images on another total batch), its provenance (also on a node without git), the jobs as
submitit pickles them, the detections zipped for the evaluation server, an evaluation-only job that
evaluates the shared checkpoint (and one whose training has not finished, which evaluates nothing), and
that a job imports no planning code."""

from __future__ import annotations

import json
import pickle
import zipfile

import pytest
from mmengine.config import Config

from sbrrepro import training
from sbrrepro.layout import RunPaths
from sbrrepro.training import SERVER_NAME, EvalJob, TrainingJob, scale_schedule, schedule, trainable
from tests.helpers import cli_json, copy_plan, imported_by, run_cli


def _cfg(loop: dict, schedulers: list[dict], checkpoint: dict, batch: int = 2, paper: int = 16) -> Config:
    """What `scale_schedule` and `schedule` read of a config: `batch` images per process, the paper's `paper`."""
    return Config(dict(train_cfg=loop, param_scheduler=schedulers, train_dataloader=dict(batch_size=batch),
                       auto_scale_lr=dict(base_batch_size=paper), default_hooks=dict(checkpoint=checkpoint)))


def test_an_iteration_schedule_on_another_total_batch_sees_the_papers_images():
    """16 images a step in the paper; 4 processes of 2 images take 8: twice the iterations, and every
    iteration count of the schedule doubled with them."""
    cfg = _cfg(dict(type="IterBasedTrainLoop", max_iters=1000, val_interval=500),
               [dict(type="LinearLR", by_epoch=False, begin=0, end=100),
                dict(type="MultiStepLR", by_epoch=False, begin=0, end=1000, milestones=[600, 800])],
               dict(type="CheckpointHook", by_epoch=False, interval=250))
    scaled = scale_schedule(cfg, 4)
    assert (scaled.train_cfg.max_iters, scaled.train_cfg.val_interval) == (2000, 1000)
    warmup, steps = scaled.param_scheduler
    assert (warmup.end, steps.end, steps.milestones) == (200, 2000, [1200, 1600])
    assert scaled.default_hooks.checkpoint.interval == 500
    assert cfg.train_cfg.max_iters == 1000 and cfg.param_scheduler[1].milestones == [600, 800], "cfg is left as it is"
    assert scale_schedule(cfg, 8) is cfg  # the paper's total batch
    assert schedule(scaled, 4) == {"unit": "iter", "length": 2000, "lr_steps": [1200, 1600], "warmup_iters": 200,
                                   "val_interval": 1000, "checkpoint_interval": 500, "images": 16000, "scaled": True}


def test_an_epoch_schedule_already_sees_the_papers_images():
    cfg = _cfg(dict(type="EpochBasedTrainLoop", max_epochs=12, val_interval=1),
               [dict(type="LinearLR", by_epoch=False, begin=0, end=500),
                dict(type="MultiStepLR", by_epoch=True, begin=0, end=12, milestones=[8, 11])],
               dict(type="CheckpointHook", interval=1))
    assert scale_schedule(cfg, 4) is cfg
    assert schedule(cfg, 4) == {"unit": "epoch", "length": 12, "lr_steps": [8, 11], "warmup_iters": 500,
                                "val_interval": 1, "checkpoint_interval": 1, "images": None, "scaled": False}


def test_trainable_counts_the_parameters_that_learn():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)  # frozen, as a backbone's first stage
    assert trainable(model) == 4 * 2 + 2


def test_the_jobs_pickle_as_submitit_sends_them_and_a_plain_process_is_not_distributed():
    for job in (TrainingJob("row.py", "runs/k"), EvalJob("row.py", "runs/t", "runs/k")):
        assert vars(pickle.loads(pickle.dumps(job))) == vars(job)
    assert training._distributed_env("1") is False  # not inside a submitit job


def test_an_evaluation_of_a_training_that_has_not_finished_evaluates_nothing(tmp_path):
    job = EvalJob(str(tmp_path / "row.py"), str(tmp_path / "train"), str(tmp_path / "eval"))
    with pytest.raises(RuntimeError, match="has not finished: nothing to evaluate"):
        job()
    assert not (tmp_path / "eval").exists()


def test_the_detections_are_zipped_under_the_servers_file_name(tmp_path):
    run = RunPaths(tmp_path)
    for iou in ("bbox", "segm"):
        run.detections(iou).write_text(json.dumps([{"image_id": 1, "iou": iou}]))
    training._zip_for_server(run, ["bbox", "segm"])
    assert run.uploads() == [run.upload("bbox"), run.upload("segm")]
    for iou in ("bbox", "segm"):
        with zipfile.ZipFile(run.upload(iou)) as z:
            assert z.namelist() == [SERVER_NAME] and json.loads(z.read(SERVER_NAME))[0]["iou"] == iou
    assert not list(tmp_path.glob(".*partial")), "no zip left half-written"


@pytest.mark.training
def test_an_evaluation_only_row_evaluates_the_shared_checkpoint(tmp_path):
    pytest.importorskip("mmcv._ext")
    plan = copy_plan(tmp_path, "sbr-cnn/table4", rows=[4, 6])  # L_e = 3 (trains) and L_e = 5 (evaluates)
    study = tmp_path / "study"
    args = ("run", str(plan), "--smoke", "--epochs", "1", "--study", str(study))
    first = run_cli(*args, "--wait", timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "submitted 2 job(s)" in first.stdout
    states = {s["row"]: s for s in cli_json("status", "--study", str(study))}
    train, evaluation = study / "runs" / states[4]["key"], study / "runs" / states[6]["key"]
    done = json.loads((evaluation / "done.json").read_text())
    assert done["checkpoint"] == str(train / "epoch_1.pth")
    assert not list(evaluation.glob("epoch_*.pth")), "an evaluation-only job trains nothing"
    assert "coco/segm_mAP" in done["metrics"]
    rows = {r["row"]: r for r in cli_json("collect", "--study", str(study))}
    assert rows[6]["metrics"]["segm_AP"] == round(100 * done["metrics"]["coco/segm_mAP"], 1)
    assert "submitted 0 job(s)" in run_cli(*args).stdout


@pytest.mark.slow  # loads a generated config: imports MMDetection
def test_a_node_without_git_still_trains(tiny_configs, monkeypatch, tmp_path):
    """The run's provenance names sbrrepro's commit where git is there; a compute node without git
    gets no commit, not a failed training."""
    from mmengine.config import Config

    from sbrrepro.training import provenance

    cfg = Config.fromfile(str(tiny_configs(1)[0].path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    prov = provenance(cfg, "1")
    assert prov["sbrrepro_commit"] is None and prov["versions"]["mmdet"] == "3.3.0"


@pytest.mark.slow  # a process that imports the plugins
def test_what_runs_on_a_compute_node_imports_no_planning_code():
    """A job unpickles its TrainingJob (or EvalJob) inside the executor's wrapper and loads the
    plugins: none of that brings in plans, the zoo, config generation or the dataset generator."""
    pytest.importorskip("mmcv._ext")
    loaded = set(imported_by("sbrrepro.training, sbrrepro.cluster.local, sbrrepro.models", ("sbrrepro",)))
    assert "sbrrepro.models.sbr_cnn.r3_roi_head" in loaded
    assert not loaded & {"sbrrepro.plan", "sbrrepro.zoo", "sbrrepro.configs", "sbrrepro.dataset", "sbrrepro.prepare"}
