"""Crashes and kills lose nothing: a preempted training resumes from its checkpoint (on every
executor), and a submission whose `run` was killed before recording it is adopted, not repeated
(a job of its own, or the tasks of a SLURM array)."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from conftest import HELD, TABLE3, interrupt, settle, slurm_profile, slurm_up

from sbrrepro import jobs
from sbrrepro.cluster import FINISHED
from sbrrepro.cluster.local import LocalExecutor
from sbrrepro.cluster.profile import load_cluster
from sbrrepro.cluster.slurm import SlurmExecutor
from sbrrepro.config_files import write_configs
from sbrrepro.configs import smoke_scale
from sbrrepro.dataset import SyntheticSpec, ensure_dataset
from sbrrepro.layout import RunPaths, StudyPaths
from sbrrepro.plan import load_plan
from sbrrepro.study import SCHEMA_VERSION, Study
from sbrrepro.training import TrainingJob

pytest.importorskip("mmcv._ext")


@pytest.fixture(scope="module")
def tiny_configs(tmp_path_factory):
    """Smoke-scale configs of Table 3 rows 1 and 3 on 8 images for `epochs` epochs."""
    tmp = tmp_path_factory.mktemp("tiny")
    data = ensure_dataset(tmp / "data", SyntheticSpec(train_images=8, val_images=4))
    plan = load_plan(TABLE3)
    plan = dataclasses.replace(plan, rows=[plan.rows[0], plan.rows[2]])
    return lambda epochs: write_configs(plan, dataclasses.replace(smoke_scale(data), epochs=epochs, warmup_iters=2),
                                       StudyPaths(tmp / f"study-{epochs}"))


def test_a_preempted_training_resumes_from_its_checkpoint(executor, tiny_configs, tmp_path):
    config = tiny_configs(4)[1]
    run, folder = RunPaths(tmp_path / "run"), tmp_path / "submitit"
    job_id = executor.submit(TrainingJob(str(config.path), str(run.root)), folder, "preempted")
    deadline = time.time() + 300
    while not run.checkpoint(1).exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not run.done.exists(), "too late to preempt"
    interrupt(executor, job_id)
    assert settle(executor, job_id, folder, timeout=600) == FINISHED
    starts = sorted(run.root.glob("*/*.log"))
    assert len(starts) == 2, "the requeued job starts once more"
    assert "Auto resumed from the latest checkpoint" in starts[1].read_text()
    done = json.loads(run.done.read_text())
    assert done["epochs"] == 4 and "coco/bbox_mAP" in done["metrics"]
    epochs = sorted(p.name for p in run.root.glob("epoch_*.pth"))
    assert epochs[-1] == "epoch_4.pth"


def test_a_submission_left_unrecorded_by_a_killed_run_is_adopted(tiny_configs, tmp_path):
    study = Study.open(tmp_path / "study", "smoke", create=True)
    rows = tiny_configs(1)
    # `run` submitted the first training, then was killed before it could record the job id.
    key = rows[0].key
    orphan = LocalExecutor().submit(TrainingJob("/nonexistent.py", str(study.paths.run(key).root)),
                                    study.paths.run(key).submitit, "orphan")
    assert jobs.submit(study, rows[:1], LocalExecutor()) == []
    assert study.submissions()[key].job_id == orphan
    # that job fails (its config does not exist): status says so, with the end of its log
    assert settle(LocalExecutor(), orphan, study.paths.run(key).submitit) == "failed"
    (state,) = jobs.states(study, rows[:1])
    assert state.state == "failed" and "/nonexistent.py" in state.log_tail


def _forget_submissions(study: Study) -> None:
    """As if `run` had been killed between its submissions and their records."""
    import sqlite3

    con = sqlite3.connect(study.root / "state.sqlite")
    con.execute("DELETE FROM runs")
    con.commit()
    con.close()


@pytest.mark.skipif(not slurm_up(), reason="no SLURM cluster answers here")
def test_an_array_left_unrecorded_by_a_killed_run_is_adopted_task_by_task(tiny_configs, tmp_path):
    """Two trainings as one array, held by a start time an hour away (nothing trains)."""
    executor = SlurmExecutor(load_cluster(str(slurm_profile(tmp_path, sbatch={"mem": 1000, **HELD}))))
    study = Study.open(tmp_path / "study", "smoke", create=True)
    rows = tiny_configs(1)
    keys = [r.key for r in rows]
    assert jobs.submit(study, rows, executor) == keys
    first = study.submissions()
    try:
        array = first[keys[0]].job_id.split("_")[0]
        assert [first[k].job_id for k in keys] == [f"{array}_0", f"{array}_1"]
        _forget_submissions(study)
        assert jobs.submit(study, rows, executor) == []  # every task adopted
        assert {k: (s.job_id, s.folder) for k, s in study.submissions().items()} == {
            k: (s.job_id, s.folder) for k, s in first.items()}
        # killed before submitit had put the second task's job pickle in place: that task cannot
        # run its training, so the training goes out once more, alone
        _forget_submissions(study)
        (first[keys[1]].folder / f"{array}_1_submitted.pkl").unlink()
        assert jobs.submit(study, rows, executor) == [keys[1]]
        now = study.submissions()
        assert now[keys[0]].job_id == f"{array}_0" and "_" not in now[keys[1]].job_id
        assert {k: len(t) for k, t in jobs.traces(study, keys).items()} == {k: 1 for k in keys}
    finally:
        jobs.cancel(study, rows)
        for s in first.values():
            executor.cancel(s.job_id, s.folder)


def test_cancel_stops_a_running_training(tiny_configs, tmp_path, cli):
    study = Study.open(tmp_path / "study", "smoke", create=True)
    rows = tiny_configs(50)[:1]
    study.register((TABLE3, rows))
    assert jobs.submit(study, rows, LocalExecutor()) == [rows[0].key]
    result = cli("cancel", "--study", str(study.root))
    assert result.returncode == 0 and f"cancelled 1 job(s)\n  {rows[0].key}" in result.stdout
    sub = study.submissions()[rows[0].key]
    assert settle(LocalExecutor(), sub.job_id, study.paths.run(rows[0].key).submitit) == "cancelled"
    assert [s.state for s in jobs.states(study, rows)] == ["cancelled"]
    assert "cancelled 0 job(s)" in cli("cancel", "--study", str(study.root)).stdout
    try:  # a plain run submits a cancelled training again
        assert jobs.submit(study, rows, LocalExecutor()) == [rows[0].key]
    finally:
        jobs.cancel(study, rows)


def test_two_runs_cannot_submit_to_one_study_at_once(tmp_path, cli):
    study = Study.open(tmp_path / "study", "smoke", create=True)
    with study.submitting():  # another `sbrrepro run` is submitting
        result = cli("run", str(TABLE3), "--smoke", "--study", str(study.root))
    assert result.returncode == 2 and "another `sbrrepro run` is submitting" in result.stderr
    assert study.submissions() == {}


def test_a_state_store_of_another_version_is_refused_before_any_write(tmp_path, cli):
    import sqlite3

    study = Study.open(tmp_path / "study", "smoke", create=True)
    study.submissions()  # creates state.sqlite
    con = sqlite3.connect(study.root / "state.sqlite")
    con.execute("PRAGMA user_version = 99")
    con.close()
    result = cli("run", str(TABLE3), "--smoke", "--dry-run", "--study", str(study.root))
    assert result.returncode == 2 and "state schema 99" in result.stderr and "Traceback" not in result.stderr
    assert not study.paths.configs.exists()


def test_a_state_store_of_schema_1_is_migrated_and_keeps_its_jobs(tmp_path, cli):
    """A study that sbrrepro wrote before job arrays (no per-job folder) goes on with its jobs."""
    import sqlite3

    study = Study.open(tmp_path / "study", "smoke", create=True)
    study.record("slurm", [("r3_cnn-abc", "configs/r3.py", "41", study.paths.run("r3_cnn-abc").submitit)])
    con = sqlite3.connect(study.root / "state.sqlite")  # back to schema 1: no folder column
    con.executescript("ALTER TABLE runs DROP COLUMN folder; PRAGMA user_version = 1")
    con.close()
    (sub,) = Study.open(study.root).submissions().values()
    assert (sub.key, sub.job_id, sub.folder) == ("r3_cnn-abc", "41", study.paths.run("r3_cnn-abc").submitit)
    con = sqlite3.connect(study.root / "state.sqlite")
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()
    assert cli("run", str(TABLE3), "--smoke", "--dry-run", "--study", str(study.root)).returncode == 0


def test_a_node_without_git_still_trains(tiny_configs, monkeypatch, tmp_path):
    """The run's provenance names sbrrepro's commit where git is there; a compute node without git
    gets no commit, not a failed training."""
    from mmengine.config import Config

    from sbrrepro.training import provenance

    cfg = Config.fromfile(str(tiny_configs(1)[0].path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    prov = provenance(cfg, "1")
    assert prov["sbrrepro_commit"] is None and prov["versions"]["mmdet"] == "3.3.0"


def test_what_runs_on_a_compute_node_imports_no_planning_code():
    """A job unpickles its TrainingJob (or EvalJob) inside the executor's wrapper and loads the
    plugins: none of that brings in plans, the zoo, config generation or the dataset generator."""
    import subprocess
    import sys

    code = ("import sys, sbrrepro.training, sbrrepro.cluster.local, sbrrepro.models; "
            "print(' '.join(m for m in sys.modules if m.startswith('sbrrepro')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(out.split())
    assert "sbrrepro.models.sbr_cnn.r3_roi_head" in loaded
    assert not loaded & {"sbrrepro.plan", "sbrrepro.zoo", "sbrrepro.configs", "sbrrepro.dataset", "sbrrepro.prepare"}
