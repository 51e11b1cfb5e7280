"""The GRoIE and Multi-scale Subnetwork papers: their recipes' schedules as generated, an iteration
schedule trained for real, and an AP-per-epoch figure drawn from a real two-epoch run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sbrrepro.config_files import write_configs
from sbrrepro.configs import build_config, full_scale, smoke_scale
from sbrrepro.dataset import SyntheticSpec, ensure_dataset
from sbrrepro.layout import RunPaths, StudyPaths
from sbrrepro.plan import load_plan
from sbrrepro.results import epoch_metrics, final_metrics
from tests.helpers import REPO, copy_plan

MS_SUBNET = REPO / "plans" / "ms-subnet"


def _trained(job, tmp_path) -> dict:
    """Run a training job in a process of its own, as the executors do (MMEngine keeps one
    visualizer per process: a second runner in a process would log into the first one's folder)."""
    from sbrrepro.cluster import FINISHED
    from sbrrepro.cluster.local import LocalExecutor
    from tests.helpers import settle

    executor, folder = LocalExecutor(), tmp_path / "submitit"
    job_id = executor.submit(job, folder, "related")
    assert settle(executor, job_id, folder, timeout=600) == FINISHED
    return json.loads(RunPaths(Path(job.work_dir)).done.read_text())


def test_the_papers_recipes_as_generated(tmp_path):
    """GRoIE: warm-up from 1/3, clipping at 35 (none for Grid R-CNN), 2 RoIAlign points per bin in every
    extractor, validation after every epoch. MS-subnet: 720k iterations, steps at 480k and 640k, and
    the subnetwork in C4's mask branch at C4's width."""
    scale = full_scale(tmp_path / "coco")
    rows = {r.number: r for r in load_plan(REPO / "plans" / "groie" / "table5.yaml").rows}
    faster, grid = build_config(rows[1], scale), build_config(rows[3], scale)
    assert faster["param_scheduler"][0]["start_factor"] == pytest.approx(1 / 3)
    assert faster["optim_wrapper"]["clip_grad"]["max_norm"] == 35 and "clip_grad" not in grid["optim_wrapper"]
    assert faster["train_cfg"]["val_interval"] == 1 and faster["auto_scale_lr"]["base_batch_size"] == 12
    roi_align = json.dumps(grid["model"]).count('"RoIAlign"')
    assert roi_align == 2 and json.dumps(grid["model"]).count('"sampling_ratio": 2') == roi_align
    c4, subnet = (build_config(r, scale) for r in load_plan(MS_SUBNET / "table2.yaml").rows)
    assert c4["train_cfg"] == {"type": "IterBasedTrainLoop", "max_iters": 720000, "val_interval": 720000}
    assert c4["param_scheduler"][1]["milestones"] == [480000, 640000] and not c4["param_scheduler"][1]["by_epoch"]
    assert c4["train_dataloader"]["sampler"]["type"] == "InfiniteSampler"
    extractor = subnet["model"]["roi_head"]["mask_roi_extractor"]
    assert (extractor["type"], extractor["in_channels"], extractor["out_channels"]) == (
        "MultiScaleSubnetRoIExtractor", 1024, 1024)


def test_a_row_must_build_its_recipes_backbone(tmp_path, cli):
    path = copy_plan(tmp_path, "ms-subnet/table2", recipe={"backbone": "resnet101_fpn"})
    result = cli("run", str(path), "--dry-run", "--study", str(tmp_path / "s"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'rows[0].recipe.backbone'" in result.stderr and "builds resnet50_c4" in result.stderr


@pytest.mark.training
def test_an_iteration_schedule_trains_validates_and_checkpoints_by_iteration(tmp_path):
    """The C4 Mask R-CNN with the subnetwork, 4 iterations at smoke size: the job validates and saves
    at its last iteration, and its files are named by iterations."""
    pytest.importorskip("mmcv._ext")
    from sbrrepro.training import TrainingJob

    data = ensure_dataset(tmp_path / "data", SyntheticSpec(train_images=4, val_images=2))
    path = copy_plan(tmp_path, "ms-subnet/table2", rows=[2], recipe={"iters": 4, "lr_steps": [2, 3], "warmup_iters": 2})
    scale = dataclasses.replace(smoke_scale(data), epochs=0)  # the recipe's own (iteration) schedule
    (rc,) = write_configs(load_plan(path), scale, StudyPaths(tmp_path / "study"))
    run = RunPaths(tmp_path / "run")
    summary = _trained(TrainingJob(str(rc.path), str(run.root)), tmp_path)
    assert summary["iters"] == 4 and run.final_step() == (4, "iter")
    assert run.final_checkpoint() == run.root / "iter_4.pth" and run.final_checkpoint().exists()
    assert final_metrics(run, 4) == summary["metrics"] and "coco/segm_mAP" in summary["metrics"]


@pytest.mark.training
def test_an_ap_per_epoch_figure_from_a_two_epoch_run(tmp_path):
    """GRoIE Fig. 2's baseline, two epochs on a few images: validated after each (its recipe asks
    for curves), then drawn."""
    pytest.importorskip("mmcv._ext")
    from sbrrepro.figures import ap_curves
    from sbrrepro.training import TrainingJob

    data = ensure_dataset(tmp_path / "data", SyntheticSpec(train_images=4, val_images=2))
    plan_path = copy_plan(tmp_path, "groie/fig2", rows=[1])
    paths = StudyPaths(tmp_path / "study")
    (rc,) = write_configs(load_plan(plan_path), dataclasses.replace(smoke_scale(data), epochs=2), paths)
    _trained(TrainingJob(str(rc.path), str(paths.run(rc.train_key).root)), tmp_path)
    assert sorted(epoch_metrics(paths.run(rc.train_key))) == [1, 2]
    out = paths.figure("groie/fig2")
    written = ap_curves.draw(paths, [(load_plan(plan_path), rc)], out)
    assert written == [out.with_suffix(".png"), out.with_suffix(".pdf")] and written[0].stat().st_size > 1000


def test_the_iteration_schedule_is_scaled_at_job_start_to_the_papers_images(tmp_path, monkeypatch):
    """MS-subnet's 720k iterations of 2 images, as 8 processes of 1 image see them at job start: 180k
    iterations (x 8 = 720k x 2), lr steps, warm-up, validation and checkpoints scaled alike, and the
    provenance records it; the written config (its key) keeps the paper's schedule, and an epoch
    schedule or the paper's own total batch is left as it is."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from sbrrepro import training

    (rc,) = write_configs(load_plan(MS_SUBNET / "table2.yaml"), full_scale(tmp_path / "coco"),
                          StudyPaths(tmp_path / "study"))[:1]
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setattr(Runner, "from_cfg", classmethod(lambda cls, cfg: None))  # no model, no training
    run = RunPaths(tmp_path / "run")
    run.root.mkdir()
    cfg, _ = training._runner(str(rc.path), run)
    assert cfg.train_cfg.max_iters * 8 * cfg.train_dataloader.batch_size == 720000 * 2
    assert cfg.train_cfg.val_interval == 180000 and cfg.default_hooks.checkpoint.interval == 60000 // 4
    warmup, steps = cfg.param_scheduler
    assert (warmup.end, steps.end, steps.milestones) == (125, 180000, [120000, 160000])
    prov = json.loads(run.provenance.read_text())
    assert prov["schedule"] == {"unit": "iter", "length": 180000, "lr_steps": [120000, 160000], "warmup_iters": 125,
                                "val_interval": 180000, "checkpoint_interval": 15000, "images": 1440000,
                                "scaled": True}
    assert prov["lr_effective"] == 4 * prov["lr_config"]
    written = Config.fromfile(str(rc.path))
    assert written.train_cfg.max_iters == 720000 and training.scale_schedule(written, 2) is written
    epochs = Config(build_config(load_plan(REPO / "plans" / "groie" / "table5.yaml").rows[0],
                                 full_scale(tmp_path / "coco")))
    assert training.scale_schedule(epochs, 8) is epochs
    # the finished run is the paper's schedule (no ‡), on another total batch (†)
    from sbrrepro.collect import Run, _paper_length
    assert _paper_length(Run(None, {}, prov, (180000, "iter"))) == (720000, "iter")


def test_gcnet_with_groie_has_the_authors_8_box_and_6_mask_attention_heads(tmp_path):
    """Table V row 8 as the authors' mask_rcnn_r4_gcb_c3-c5_r50_fpn_syncbn_1x-groie.py: 8 heads in the box
    extractor's attention, 6 in the mask extractor's; row 6 (Mask R-CNN + GRoIE) keeps 6 in both."""
    scale = full_scale(tmp_path / "coco")
    rows = {r.number: r for r in load_plan(REPO / "plans" / "groie" / "table5.yaml").rows}

    def heads(row: int) -> tuple[int, int]:
        head = build_config(rows[row], scale)["model"]["roi_head"]
        return tuple(head[k]["post_cfg"][0]["num_heads"] for k in ("bbox_roi_extractor", "mask_roi_extractor"))

    assert heads(8) == (8, 6) and heads(6) == (6, 6)
    for fig in ("fig5", "fig6"):  # the figures' curves are Table V's trainings
        (row,) = [r for r in load_plan(REPO / "plans" / "groie" / f"{fig}.yaml").rows if r.number == 8]
        assert build_config(row, scale)["model"] == build_config(rows[8], scale)["model"]
