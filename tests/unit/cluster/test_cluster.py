"""Executors: one protocol, one conformance suite run against every executor this machine has
(the local one always; SLURM where a cluster answers). What one executor alone does is in its own file:
test_local.py, test_slurm.py (the sbatch lines a profile produces), and the profile in test_profile.py."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys
import time
from pathlib import Path

from sbrrepro.cluster import CANCELLED, FAILED, FINISHED, RUNNING
from tests.helpers import settle


def test_a_job_that_returns_finishes(executor, tmp_path):
    job_id = executor.submit(functools.partial(time.sleep, 0.1), tmp_path, "ok")
    assert settle(executor, job_id, tmp_path) == FINISHED


def test_a_job_that_raises_fails(executor, tmp_path):
    job_id = executor.submit(functools.partial(int, "not a number"), tmp_path, "raises")
    assert settle(executor, job_id, tmp_path) == FAILED


def test_a_job_after_one_that_succeeds_runs_and_after_one_that_fails_fails_unrun(executor, tmp_path):
    first_ok = executor.submit(functools.partial(time.sleep, 0.1), tmp_path, "ok")
    first_bad = executor.submit(functools.partial(int, "not a number"), tmp_path, "raises")
    marks = [tmp_path / "ran-after-ok", tmp_path / "ran-after-failure"]
    second = [executor.submit(functools.partial(Path.touch, mark), tmp_path, "second", (first, tmp_path))
              for first, mark in zip((first_ok, first_bad), marks)]
    assert [settle(executor, job, tmp_path, timeout=180) for job in second] == [FINISHED, FAILED]
    assert [mark.exists() for mark in marks] == [True, False]


def test_jobs_submitted_together_end_each_on_its_own(executor, tmp_path):
    jobs = [functools.partial(time.sleep, 0.1), functools.partial(int, "not a number"),
            functools.partial(time.sleep, 0.1)]
    ids = executor.submit_array(jobs, tmp_path, "together")
    assert len(set(ids)) == 3
    assert [settle(executor, i, tmp_path) for i in ids] == [FINISHED, FAILED, FINISHED]
    assert executor.states([(i, tmp_path) for i in ids]) == dict(zip(ids, [FINISHED, FAILED, FINISHED]))


def _training(folder: Path, name: str) -> functools.partial:
    """A job that behaves as a training: its process writes its pid, saves a checkpoint, trains for
    minutes, then writes done (not when its training is killed, whichever process a signal reaches first)."""
    script = f"echo $$ > {folder}/{name}.pid; touch {folder}/{name}.ckpt; sleep 300 && touch {folder}/{name}.done"
    return functools.partial(subprocess.run, ["bash", "-c", script], check=True)


def _submitted_by_a_script(executor, jobs: list, folder: Path, after: tuple | None = None) -> list[str]:
    """Submit as `sbrrepro run ... &` in a shell script (or a batch job) does: from a process that
    ignores SIGINT, which everything it starts inherits. Several jobs go out together."""
    code = ("import pickle, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "executor, jobs, folder, after = pickle.loads(sys.stdin.buffer.read()); "
            "ids = [executor.submit(jobs[0], folder, 'script', after)] if len(jobs) == 1 else "
            "executor.submit_array(jobs, folder, 'script'); print(' '.join(ids))")
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps((executor, jobs, folder, after)),
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return out.stdout.decode().split()


def _started(folder: Path, name: str, timeout: float = 120) -> int:
    """The pid of the job's training process, once it runs."""
    pid = folder / f"{name}.pid"
    deadline = time.time() + timeout
    while not (pid.exists() and pid.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    return int(pid.read_text())


def _gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.2)
    return not Path(f"/proc/{pid}").exists()


def test_a_running_job_cancelled_stops_within_seconds_and_can_resume(executor, tmp_path):
    """However it was submitted: cancelled while it trains, the job is gone within seconds with no
    process behind, writes no done, keeps its checkpoint, and is `cancelled` (not failed)."""
    (job_id,) = _submitted_by_a_script(executor, [_training(tmp_path, "t")], tmp_path)
    pid = _started(tmp_path, "t")
    start = time.time()
    executor.cancel(job_id, tmp_path)
    assert _gone(pid), "the training process outlived its cancelled job"
    assert time.time() - start < 20
    assert settle(executor, job_id, tmp_path) == CANCELLED
    if executor.kind == "local":  # the job id is its controller's pid
        assert _gone(int(job_id))
    assert (tmp_path / "t.ckpt").exists() and not (tmp_path / "t.done").exists()


def test_a_pending_job_cancelled_never_starts(executor, tmp_path):
    (first,) = _submitted_by_a_script(executor, [_training(tmp_path, "first")], tmp_path)
    (second,) = _submitted_by_a_script(executor, [_training(tmp_path, "second")], tmp_path, (first, tmp_path))
    pid = _started(tmp_path, "first")
    executor.cancel(second, tmp_path)
    assert settle(executor, second, tmp_path) == CANCELLED
    executor.cancel(first, tmp_path)
    assert _gone(pid) and settle(executor, first, tmp_path) == CANCELLED
    time.sleep(3)
    assert not (tmp_path / "second.pid").exists()


def test_one_job_of_those_submitted_together_is_cancelled_alone(executor, tmp_path):
    first, second = _submitted_by_a_script(executor, [_training(tmp_path, "a"), _training(tmp_path, "b")],
                                           tmp_path)
    first_pid = _started(tmp_path, "a")
    executor.cancel(second, tmp_path)
    assert settle(executor, second, tmp_path) == CANCELLED
    assert executor.states([(first, tmp_path), (second, tmp_path)]) == {first: RUNNING, second: CANCELLED}
    executor.cancel(first, tmp_path)
    assert _gone(first_pid) and settle(executor, first, tmp_path) == CANCELLED
