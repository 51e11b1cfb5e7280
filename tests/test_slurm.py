"""Against the real SLURM cluster that slurm/cluster.sh starts (skipped where none answers): a
2-node CPU training (gloo) of a smoke model through the SLURM executor ends with metrics."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import REPO, TABLE3, settle, slurm_up

from sbrrepro.configs import smoke_scale, write_configs
from sbrrepro.dataset import SyntheticSpec, ensure_dataset
from sbrrepro.executors import FINISHED, SlurmExecutor, load_profile
from sbrrepro.plan import load_plan
from sbrrepro.results import final_metrics, load_histograms
from sbrrepro.training import DONE_FILE, TrainingJob

pytestmark = pytest.mark.skipif(not slurm_up(), reason="no SLURM cluster answers here")


def test_two_node_cpu_training_ends_with_metrics(tmp_path):
    data = ensure_dataset(tmp_path / "data", SyntheticSpec(train_images=8, val_images=4))
    scale = dataclasses.replace(smoke_scale(data), epochs=1, warmup_iters=2)
    plan = load_plan(TABLE3)
    plan = dataclasses.replace(plan, rows=[plan.rows[2]])  # R^3-CNN, 2 loops
    (config,) = write_configs(plan, scale, tmp_path / "configs")
    profile = tmp_path / "two-nodes.yaml"
    profile.write_text("executor: slurm\nnodes: 2\ntasks_per_node: 1\ncpus_per_task: 1\npartition: debug\n"
                       "time_min: 20\nsbatch: {mem: 1500}\n")
    executor = SlurmExecutor(load_profile(str(profile)))
    run_dir, folder = tmp_path / "run", tmp_path / "submitit"
    job_id = executor.submit(TrainingJob(str(config.path), str(run_dir)), folder, "two-nodes")

    state = settle(executor, job_id, folder, timeout=600)
    logs = {p.name: p.read_text()[-2000:] for p in folder.glob("*_log.*")}
    assert state == FINISHED, logs
    # one task per node, both in one process group
    assert {p.name for p in folder.glob(f"{job_id}_*_log.out")} == {f"{job_id}_0_log.out", f"{job_id}_1_log.out"}
    text = next(run_dir.glob("*/*.log")).read_text()
    assert "Distributed training: True" in text and "GPU number: 2" in text
    done = json.loads((run_dir / DONE_FILE).read_text())
    assert done["metrics"] == final_metrics(run_dir, 1) and "coco/segm_mAP" in done["metrics"]
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["processes"] == 2 and prov["batch"] == 2 * prov["images_per_process"]
    assert prov["lr_scaled"] and prov["lr_effective"] == 2 * prov["lr_config"]  # flagged: the paper's batch differs
    _, series = load_histograms(run_dir)
    assert sorted(series) == ["loop1", "loop2"] and sum(series["loop1"]) > 0


def test_states_without_accounting_come_from_squeue_and_the_job_folder(tmp_path, monkeypatch):
    """Clusters without sacct: a `sacct` that fails stands for accounting being off."""
    import functools
    import os
    import time as _time

    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sacct").write_text("#!/bin/sh\necho 'accounting storage is disabled' >&2\nexit 1\n")
    (shim / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    executor = SlurmExecutor(load_profile(str(REPO / "slurm" / "local-test.yaml")))
    ok = executor.submit(functools.partial(_time.sleep, 3), tmp_path / "ok", "ok")
    assert executor.state(ok, tmp_path / "ok") in ("pending", "running")
    assert settle(executor, ok, tmp_path / "ok") == FINISHED
    bad = executor.submit(functools.partial(int, "x"), tmp_path / "bad", "bad")
    assert settle(executor, bad, tmp_path / "bad") == "failed"


def test_a_plan_on_slurm_trains_once_and_evaluates_after_its_training(tmp_path):
    """Through the command line: Table 4's L_e = 3 row trains, its L_e = 5 row is an evaluation
    job held by a SLURM dependency (afterok) on that training."""
    import shutil

    import yaml
    from conftest import run_cli

    shutil.copytree(REPO / "tables", tmp_path / "tables")
    shutil.copytree(REPO / "plans" / "recipes", tmp_path / "plans" / "recipes")
    plan = yaml.safe_load((REPO / "plans" / "table4.yaml").read_text())
    plan["rows"] = [plan["rows"][3], plan["rows"][5]]
    (tmp_path / "plans" / "t4.yaml").write_text(yaml.safe_dump(plan))
    study = tmp_path / "study"
    result = run_cli("run", str(tmp_path / "plans" / "t4.yaml"), "--smoke", "--epochs", "1", "--study", str(study),
                     "--cluster", str(REPO / "slurm" / "local-test.yaml"), "--wait", timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "submitted 2 job(s) (slurm)" in result.stdout
    states = json.loads(run_cli("status", "--study", str(study), "--json").stdout)
    assert [(s["row"], s["state"], s["executor"]) for s in states] == [(4, "done", "slurm"), (6, "done", "slurm")]
    batch = (study / "runs" / states[1]["key"] / "submitit" / f"{states[1]['job_id']}_submission.sh").read_text()
    assert f"#SBATCH --dependency=afterok:{states[0]['job_id']}" in batch


def test_a_killed_and_restarted_run_submits_each_job_once(tmp_path):
    import shutil
    import subprocess
    import sys
    import time as _time

    import yaml
    from conftest import run_cli

    shutil.copytree(REPO / "tables", tmp_path / "tables")
    shutil.copytree(REPO / "plans" / "recipes", tmp_path / "plans" / "recipes")
    plan = yaml.safe_load(TABLE3.read_text())
    plan["rows"] = [plan["rows"][0], plan["rows"][2]]
    (tmp_path / "plans" / "t3.yaml").write_text(yaml.safe_dump(plan))
    study = tmp_path / "study"
    args = ("run", str(tmp_path / "plans" / "t3.yaml"), "--smoke", "--epochs", "1", "--study", str(study),
            "--cluster", str(REPO / "slurm" / "local-test.yaml"))
    for delay in (0.5, 1.5, 2.5):  # killed before, while and after submitting
        proc = subprocess.Popen([sys.executable, "-m", "sbrrepro", *args], cwd=REPO)
        _time.sleep(delay)
        proc.kill()
        proc.wait()
    result = run_cli(*args, "--wait", timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    states = json.loads(run_cli("status", "--study", str(study), "--json").stdout)
    assert [s["state"] for s in states] == ["done", "done"]
    for s in states:
        assert len(list((study / "runs" / s["key"] / "submitit").glob("*_submitted.pkl"))) == 1
