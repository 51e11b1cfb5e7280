"""Crashes and kills lose nothing: a preempted training resumes from its checkpoint (on every
executor), two `run`s never submit to one study at once, and a state store of another version is
refused before anything is written, or migrated with its jobs. (A submission whose `run` was killed
before recording it is adopted, not repeated: tests/unit/test_jobs.py.)"""

from __future__ import annotations

import json
import time

import pytest

from sbrrepro.cluster import FINISHED
from sbrrepro.layout import RunPaths
from sbrrepro.study import SCHEMA_VERSION, Study
from sbrrepro.training import TrainingJob
from tests.helpers import TABLE3, interrupt, settle

pytest.importorskip("mmcv._ext")


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
