"""Against the real SLURM cluster that slurm/cluster.sh starts (skipped where none answers): a
2-node CPU training (gloo) of a smoke model through the SLURM executor ends with metrics; job
arrays keep their parallelism limit and split at their maximum size; plans run through the CLI."""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
import time
from datetime import datetime

import pytest
from submitit.core.utils import JobPaths, pickle_load

from sbrrepro import jobs
from sbrrepro.cluster import CANCELLED, FINISHED
from sbrrepro.cluster.profile import load_cluster
from sbrrepro.cluster.slurm import SlurmExecutor
from sbrrepro.config_files import write_configs
from sbrrepro.configs import smoke_scale
from sbrrepro.dataset import SyntheticSpec, ensure_dataset
from sbrrepro.layout import RunPaths, StudyPaths
from sbrrepro.plan import load_plan
from sbrrepro.results import final_metrics, load_histograms
from sbrrepro.study import Study
from sbrrepro.training import TrainingJob
from tests.helpers import HELD, REPO, TABLE3, cli_json, copy_plan, run_cli, settle, slurm_profile

pytestmark = pytest.mark.slurm


def _sacct(job_id: str, fields: str) -> list[str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", fields, "-j", job_id], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().split("|")


def test_two_node_cpu_training_ends_with_metrics(tmp_path):
    data = ensure_dataset(tmp_path / "data", SyntheticSpec(train_images=8, val_images=4))
    scale = dataclasses.replace(smoke_scale(data), epochs=1, warmup_iters=2)
    plan = load_plan(TABLE3)
    plan = dataclasses.replace(plan, rows=[plan.rows[2]])  # R^3-CNN, 2 loops
    (config,) = write_configs(plan, scale, StudyPaths(tmp_path / "study"))
    profile = tmp_path / "two-nodes.yaml"
    profile.write_text("executor: slurm\nnodes: 2\ntasks_per_node: 1\ncpus_per_task: 1\npartition: debug\n"
                       "time_min: 20\nsbatch: {mem: 1500}\n")
    executor = SlurmExecutor(load_cluster(str(profile)))
    run, folder = RunPaths(tmp_path / "run"), tmp_path / "submitit"
    job_id = executor.submit(TrainingJob(str(config.path), str(run.root)), folder, "two-nodes")

    state = settle(executor, job_id, folder, timeout=600)
    logs = {p.name: p.read_text()[-2000:] for p in folder.glob("*_log.*")}
    assert state == FINISHED, logs
    # one task per node, both in one process group
    assert {p.name for p in folder.glob(f"{job_id}_*_log.out")} == {f"{job_id}_0_log.out", f"{job_id}_1_log.out"}
    text = next(run.root.glob("*/*.log")).read_text()
    assert "Distributed training: True" in text and "GPU number: 2" in text
    done = json.loads(run.done.read_text())
    assert done["metrics"] == final_metrics(run, 1) and "coco/segm_mAP" in done["metrics"]
    prov = json.loads(run.provenance.read_text())
    assert prov["processes"] == 2 and prov["batch"] == 2 * prov["images_per_process"]
    assert prov["lr_scaled"] and prov["lr_effective"] == 2 * prov["lr_config"]  # flagged: the paper's batch differs
    _, series = load_histograms(run, "positives")
    assert sorted(series) == ["loop1", "loop2"] and sum(series["loop1"]) > 0


def test_states_without_accounting_come_from_squeue_and_the_job_folder(tmp_path, monkeypatch):
    """Clusters without sacct: a `sacct` that fails stands for accounting being off."""
    import os

    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sacct").write_text("#!/bin/sh\necho 'accounting storage is disabled' >&2\nexit 1\n")
    (shim / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    executor = SlurmExecutor(load_cluster(str(REPO / "slurm" / "local-test.yaml")))
    ok = executor.submit(functools.partial(time.sleep, 3), tmp_path / "ok", "ok")
    assert executor.state(ok, tmp_path / "ok") in ("pending", "running")
    assert settle(executor, ok, tmp_path / "ok") == FINISHED
    bad = executor.submit(functools.partial(int, "x"), tmp_path / "bad", "bad")
    assert settle(executor, bad, tmp_path / "bad") == "failed"
    held = SlurmExecutor(load_cluster(str(slurm_profile(tmp_path, array_parallelism=1, sbatch=HELD))))
    tasks = held.submit_array([functools.partial(time.sleep, 1)] * 2, tmp_path / "held", "held")
    try:  # the tasks of an array that waits as a whole, each by its own id
        assert held.states([(t, tmp_path / "held") for t in tasks]) == {t: "pending" for t in tasks}
    finally:
        for t in tasks:
            held.cancel(t, tmp_path / "held")


def test_a_plan_on_slurm_trains_once_and_evaluates_after_its_training(tmp_path):
    """Through the command line: Table 4's L_e = 3 row trains, its L_e = 5 row is an evaluation
    job held by a SLURM dependency (afterok) on that training."""
    plan = copy_plan(tmp_path, "sbr-cnn/table4", rows=[1, 4, 6])
    study = tmp_path / "study"
    result = run_cli("run", str(plan), "--smoke", "--epochs", "1", "--study", str(study),
                     "--cluster", str(REPO / "slurm" / "local-test.yaml"), "--wait", timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "submitted 3 job(s) (slurm)" in result.stdout
    states = cli_json("status", "--study", str(study))
    assert [(s["row"], s["state"], s["executor"]) for s in states] == [(1, "done", "slurm"), (4, "done", "slurm"),
                                                                       (6, "done", "slurm")]
    # the two trainings are the tasks of one array; the evaluation waits for its training's task
    array = states[0]["job_id"].split("_")[0]
    assert [s["job_id"] for s in states[:2]] == [f"{array}_0", f"{array}_1"]
    batch = (study / "runs" / states[2]["key"] / "submitit" / f"{states[2]['job_id']}_submission.sh").read_text()
    assert f"#SBATCH --dependency=afterok:{array}_1" in batch


def test_a_killed_and_restarted_run_submits_each_job_once(tmp_path):
    """Its two trainings go out as one array (slurm/local-test.yaml): each task is submitted once."""
    study = tmp_path / "study"
    plan = copy_plan(tmp_path, "sbr-cnn/table3", rows=[1, 3])
    args = ("run", str(plan), "--smoke", "--epochs", "1", "--study", str(study),
            "--cluster", str(REPO / "slurm" / "local-test.yaml"))
    for delay in (0.5, 1.5, 2.5):  # killed before, while and after submitting
        proc = subprocess.Popen([sys.executable, "-m", "sbrrepro", *args], cwd=REPO)
        time.sleep(delay)
        proc.kill()
        proc.wait()
    result = run_cli(*args, "--wait", timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    states = cli_json("status", "--study", str(study))
    assert [s["state"] for s in states] == ["done", "done"]
    found = jobs.traces(Study.open(study), [s["key"] for s in states])
    assert {key: len(t) for key, t in found.items()} == {s["key"]: 1 for s in states}


def test_an_array_with_a_parallelism_limit(tmp_path):
    """Three short jobs as one array, one at a time: one sbatch, tasks one after the other, each with
    its result."""
    executor = SlurmExecutor(load_cluster(str(slurm_profile(tmp_path, array_parallelism=1))))
    folder = tmp_path / "array"
    ids = executor.submit_array([functools.partial(time.sleep, 2)] * 3, folder, "array")
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_{i}" for i in range(3)]
    assert "#SBATCH --array=0-2%1" in (folder / f"{array}_submission.sh").read_text().splitlines()
    assert [settle(executor, i, folder, timeout=180) for i in ids] == [FINISHED] * 3
    assert [pickle_load(JobPaths(folder, i, 0).result_pickle) for i in ids] == [("success", None)] * 3
    spans = sorted((datetime.fromisoformat(start), datetime.fromisoformat(end))
                   for start, end in (_sacct(i, "Start,End") for i in ids))
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans  # never two at once


def _held_study(tmp_path) -> tuple[SlurmExecutor, Study, list]:
    """Table 3's first three rows in a new study, and an executor that submits them as an array of
    two and a single job (max_array_size 2), held by a start time an hour away: nothing trains."""
    profile = slurm_profile(tmp_path, array_parallelism=1, max_array_size=2, sbatch={"mem": 1000, **HELD})
    plan = load_plan(TABLE3)
    plan = dataclasses.replace(plan, rows=plan.rows[:3])
    study = Study.open(tmp_path / "study", "smoke", create=True)
    rows = write_configs(plan, smoke_scale(tmp_path / "data"), study.paths)
    study.register((TABLE3, rows))
    return SlurmExecutor(load_cluster(str(profile))), study, rows


def test_trainings_split_into_arrays_of_the_maximum_size_and_a_task_is_cancelled_and_retried_alone(tmp_path):
    """Three trainings with max_array_size 2: an array of two and a single job, held by a start
    time an hour away (nothing trains). One task is cancelled alone, and resubmitted alone."""
    executor, study, rows = _held_study(tmp_path)
    keys = [r.key for r in rows]
    try:
        assert jobs.submit(study, rows, executor) == keys
        subs = study.submissions()
        array = subs[keys[0]].job_id.split("_")[0]
        assert [subs[k].job_id for k in keys[:2]] == [f"{array}_0", f"{array}_1"]
        assert "_" not in subs[keys[2]].job_id and subs[keys[2]].folder == study.paths.run(keys[2]).submitit
        folder = subs[keys[0]].folder
        assert folder.parent == study.paths.arrays and subs[keys[1]].folder == folder
        assert "#SBATCH --array=0-1%1" in (folder / f"{array}_submission.sh").read_text().splitlines()
        status = cli_json("status", "--study", str(study.root))
        assert [(s["job_id"], s["state"]) for s in status] == [(subs[k].job_id, "pending") for k in keys]
        assert jobs.cancel(study, rows[1:2]) == [keys[1]]
        assert settle(executor, subs[keys[1]].job_id, folder) == CANCELLED
        assert [s.state for s in jobs.states(study, rows)] == ["pending", "cancelled", "pending"]
        assert jobs.submit(study, rows, executor) == [keys[1]]  # a plain run submits it again
        retried = study.submissions()[keys[1]]
        assert "_" not in retried.job_id and retried.folder == study.paths.run(keys[1]).submitit
        assert [s.state for s in jobs.states(study, rows)] == ["pending"] * 3
        assert {k: len(t) for k, t in jobs.traces(study, keys).items()} == {keys[0]: 1, keys[1]: 2, keys[2]: 1}
    finally:
        jobs.cancel(study, rows)


def test_a_damaged_store_of_a_slurm_study_is_rebuilt_with_its_jobs(tmp_path):
    """Two trainings as an array and one alone, held (nothing trains): after the store is cut short
    and repaired, every row has the same job, executor and state as before."""
    executor, study, rows = _held_study(tmp_path)
    try:
        assert len(jobs.submit(study, rows, executor)) == 3
        before = cli_json("status", "--study", str(study.root))
        assert [s["state"] for s in before] == ["pending"] * 3
        study.paths.state.write_bytes(study.paths.state.read_bytes()[:1500])
        assert run_cli("status", "--study", str(study.root)).returncode == 2
        repaired = run_cli("repair", "--study", str(study.root))
        assert repaired.returncode == 0 and "3 row(s), 3 submission(s)" in repaired.stdout, repaired.stderr
        assert cli_json("status", "--study", str(study.root)) == before
        assert {s.executor for s in study.submissions().values()} == {"slurm"}
        assert jobs.submit(study, rows, executor) == []
    finally:
        jobs.cancel(study, rows)
