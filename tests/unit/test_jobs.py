"""sbrrepro.jobs: a row's state comes from its work dir first, then from the executor of its recorded job;
every submission made for a key is found again (a job of its own, or a task of an array whose folder lists
the keys); a submission that a killed `run` left unrecorded is adopted, not repeated (a job of its own, or
the tasks of a SLURM array); `cancel` stops a running training, and a plain run submits it again."""

from __future__ import annotations

import json

import pytest

from sbrrepro import jobs
from sbrrepro.cluster.local import LocalExecutor
from sbrrepro.cluster.profile import load_cluster
from sbrrepro.cluster.slurm import SlurmExecutor
from sbrrepro.errors import UserError
from sbrrepro.layout import StudyPaths
from sbrrepro.study import Study
from sbrrepro.training import TrainingJob
from tests.helpers import HELD, TABLE3, dry_run_study, settle, slurm_profile

GONE = "999999999"  # a local job id (its controller's pid) that no process has


def _done(run, **fields) -> None:
    """What a finished training's job writes last."""
    run.root.mkdir(parents=True, exist_ok=True)
    run.done.write_text(json.dumps({"finished": 1_700_000_000.0, "epochs": 12, **fields}))


def test_a_rows_state_comes_from_its_work_dir_before_any_executor(tmp_path):
    study, rows = dry_run_study(tmp_path)
    keys = [r.key for r in rows]
    assert [s.state for s in jobs.states(study, rows)] == ["new"] * 5
    assert jobs.would_submit(study, rows) == set(keys)
    finished, uploaded = study.paths.run(keys[0]), study.paths.run(keys[1])
    _done(finished)
    _done(uploaded)
    uploaded.upload("bbox").write_bytes(b"PK")
    states = {s.key: s for s in jobs.states(study, rows)}
    assert states[keys[0]].state == "done" and states[keys[0]].job_id is None
    assert states[keys[1]].state == "awaiting server" and states[keys[1]].uploads == (str(uploaded.upload("bbox")),)
    uploaded.server_stats.write_text("{}")
    assert jobs.key_states(study, keys[:2]) == {keys[0]: "done", keys[1]: "done"}
    assert jobs.would_submit(study, rows) == set(keys[2:])
    assert jobs.cancel(study, rows) == []  # nothing runs


def test_a_recorded_job_that_left_nothing_failed_and_goes_again_only_when_asked(tmp_path):
    study, rows = dry_run_study(tmp_path)
    key = rows[0].key
    folder = study.paths.run(key).submitit
    folder.mkdir(parents=True)
    (folder / f"{GONE}_0_log.err").write_text("".join(f"line {n}\n" for n in range(30)) + "FileNotFoundError: x\n")
    study.record("local", [(key, str(rows[0].path), GONE, folder)])
    state = jobs.states(study, rows)[0]
    assert (state.state, state.job_id, state.executor) == ("failed", GONE, "local")
    tail = state.log_tail.splitlines()
    assert len(tail) == jobs.TAIL_LINES and tail[-1] == "FileNotFoundError: x"
    assert key not in jobs.would_submit(study, rows) and key in jobs.would_submit(study, rows, retry_failed=True)


def test_every_submission_of_a_key_is_found_in_its_folder_or_an_arrays(tmp_path):
    study, rows = dry_run_study(tmp_path)
    keys = [r.key for r in rows]
    own = study.paths.run(keys[0]).submitit
    own.mkdir(parents=True)
    (own / "41_submitted.pkl").write_bytes(b"")
    array = study.paths.arrays / "20260101-000000-abcdef"
    array.mkdir(parents=True)
    StudyPaths.manifest(array).write_text(json.dumps(keys[1:3]))
    for task in (0, 1):
        (array / f"50_{task}_submitted.pkl").write_bytes(b"")
    found = jobs.traces(study, keys)
    assert {k: [t.job_id for t in found[k]] for k in keys} == {
        keys[0]: ["41"], keys[1]: ["50_0"], keys[2]: ["50_1"], keys[3]: [], keys[4]: []}
    assert found[keys[1]][0].folder == array
    (array / "50_2_submitted.pkl").write_bytes(b"")  # a task the array's list does not name
    with pytest.raises(UserError, match=r"lists 2 task\(s\), not job 50_2's"):
        jobs.traces(study, keys)
    StudyPaths.manifest(array).write_text('{"not": "a list"}')
    with pytest.raises(UserError, match="the keys of the array's tasks"):
        jobs.traces(study, keys)


@pytest.mark.training  # runs a job
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


@pytest.mark.slurm
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


@pytest.mark.training
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
