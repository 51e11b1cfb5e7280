"""`sbrrepro preflight` and the measured cost: full-width models take real training steps and a
prediction through the local executor and the real SLURM cluster (small images, random weights: no
GPU and no internet here); the dry run's GPU-hours come from a GPU preflight at the row's image size
(a crafted preflight.json stands in for the GPU this machine lacks), with the basis named; every plan
of the five papers gets a cost and the disk its checkpoints take; `run` refuses a training whose
preflight crashed."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import pytest

from sbrrepro import preflight
from sbrrepro.cli import main
from sbrrepro.costs import COCO_TRAIN_IMAGES, plan_costs
from sbrrepro.layout import StudyPaths
from sbrrepro.preflight import Finding
from sbrrepro.prepare import Request, prepare
from tests.helpers import PLANS, plan_files, run_cli, slurm_profile

GROIE_T2 = str(PLANS / "groie" / "table2.yaml")


def _check_measured(study, keys_wanted: int) -> dict[str, Finding]:
    found = preflight.load(StudyPaths(study))
    assert len(found) == keys_wanted
    for f in found.values():
        assert f.error is None, f.error
        assert f.image_size == [128, 96] and f.device_kind == "cpu" and f.data == "embedded"
        assert f.s_per_iter > 0 and f.images_per_s > 0 and f.peak_memory_GB > 0.3  # full width: not a smoke model
        assert f.s_per_iter_without_recorder > 0 and f.checkpoint_MB > 100 and f.fits is None
    return found


@pytest.mark.training
def test_preflight_of_two_full_width_trainings_on_the_local_executor_then_the_dry_run_names_it(tmp_path):
    study = tmp_path / "S"
    out = run_cli("preflight", GROIE_T2, "--rows", "1", "4", "--image-size", "128x96", "--steps", "1",
                  "--random-init", "--study", str(study))
    assert out.returncode == 0, out.stderr[-3000:]
    found = _check_measured(study, 2)
    assert {r for f in found.values() for r in f.rows} == {"groie/table2:1", "groie/table2:4"}
    assert "recorded in" in out.stdout and "s/iter" in out.stdout

    dry = run_cli("run", GROIE_T2, "--dry-run", "--study", str(study))
    assert dry.returncode == 0, dry.stderr
    assert "preflight on CPU" in dry.stdout and "not used: a CPU measurement" in dry.stdout
    status = run_cli("status", "--study", str(study))
    assert "preflight" in status.stdout and "s/iter" in status.stdout


@pytest.mark.slurm
def test_preflight_through_the_real_slurm_cluster(tmp_path):
    study = tmp_path / "S"
    profile = slurm_profile(tmp_path, sbatch={"mem": 3000})
    out = run_cli("preflight", GROIE_T2, "--rows", "4", "--image-size", "128x96", "--steps", "1", "--random-init",
                  "--study", str(study), "--cluster", str(profile))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    _check_measured(study, 1)


def _gpu(key: str, size: list[int], s_per_iter: float = 0.5, **changes) -> Finding:
    return replace(Finding(key, ["groie/table2:4"], "NVIDIA H100 80GB HBM3", "cuda", size, 2, 10, "coco",
                           "pretrained", s_per_iter=s_per_iter, images_per_s=9.0, peak_memory_GB=5.0,
                           reserved_GB=6.0, memory_kind="cuda max allocated", checkpoint_MB=400.0,
                           gpu_memory_GB=80.0, fits=True), **changes)


@pytest.mark.slow
def test_the_cost_of_a_training_comes_from_a_gpu_preflight_at_its_image_size(tmp_path):
    prepared = prepare(Request([GROIE_T2], tmp_path / "S", dry_run=True))
    rows = prepared.chosen
    (row, rc), orc = rows[3], rows[0][1]
    paths = prepared.study.paths
    paths.preflight.write_text(json.dumps({rc.train_key: asdict(_gpu(rc.train_key, [1333, 800])),
                                           orc.train_key: asdict(_gpu(orc.train_key, [640, 480]))}))
    costs = plan_costs(rows, paths, "full", time_min=24 * 60)
    r = row.recipe
    processes = r["nodes"] * r["gpus_per_node"]
    iterations = r["epochs"] * math.ceil(COCO_TRAIN_IMAGES / (processes * r["images_per_gpu"]))
    hours = iterations * 0.5 * processes / 3600
    cost = costs[rc.train_key]
    assert cost.hours == pytest.approx(hours)
    assert "preflight on NVIDIA H100" in cost.basis and "0.50 s/iter" in cost.basis
    assert cost.checkpoint_GB == pytest.approx(400.0 * (r["keep_checkpoints"] + 1) / 1024)
    assert cost.requeues == math.ceil(hours / processes / 24) - 1
    # another image size: named, not used
    assert "not at 1333x800" in costs[orc.train_key].basis and costs[orc.train_key].basis.startswith("paper's")
    # a crashed preflight is refused by run (any scale: here the smoke key of a row), one line, exit 2
    smoke = prepare(Request([GROIE_T2], tmp_path / "smoke", smoke=True, dry_run=True))
    key = smoke.chosen[3][1].train_key
    crashed = replace(_gpu(key, [1333, 800]), error="OutOfMemoryError: CUDA out of memory", fits=False)
    smoke.study.paths.preflight.write_text(json.dumps({key: asdict(crashed)}))
    out = run_cli("run", GROIE_T2, "--smoke", "--study", str(tmp_path / "smoke"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "groie/table2:4" in out.stderr and "OutOfMemoryError" in out.stderr and "preflight" in out.stderr
    assert not list((tmp_path / "smoke" / "runs").glob("*"))


@pytest.mark.slow
def test_every_plan_of_the_five_papers_has_a_cost_and_its_checkpoints_disk(tmp_path, capsys):
    plans = [str(p) for p in plan_files()]
    assert main(["run", *plans, "--dry-run", "--study", str(tmp_path / "S"), "--cluster",
                 str(PLANS.parent / "slurm" / "paper.yaml")]) == 0
    text = capsys.readouterr().out
    assert "unknown" not in text
    assert "GPU-hours for the unique trainings" in text and "GB on disk" in text
    assert "model-class fallback" in text  # CoMask: no paper duration
    assert "requeues under paper's" in text


@pytest.mark.slow
def test_bad_preflight_input_is_one_line(tmp_path):
    for args, field in ((["--image-size", "320"], "--image-size"), (["--steps", "0"], "--steps")):
        out = run_cli("preflight", GROIE_T2, "--study", str(tmp_path / "S"), *args)
        assert out.returncode == 2 and field in out.stderr and "Traceback" not in out.stderr
