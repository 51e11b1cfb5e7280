"""sbrrepro.cluster.local: what only the local executor does (the rest is the executors' conformance suite,
test_cluster.py): a job runs once it holds one of the machine's training slots and once the job it waits
for has succeeded, a job's state comes from its folder and its controller, a job waiting for a training
slot stays small, and a job's controller keeps none of the submitting process's standard streams."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time

import pytest
from submitit.core.utils import JobPaths, cloudpickle_dump

from sbrrepro.cluster import CANCELLED, FAILED, FINISHED
from sbrrepro.cluster._common import cancelled_mark
from sbrrepro.cluster.local import LocalExecutor, Queued
from tests.helpers import settle

GONE = "999999999"  # a job id (its controller's pid) that no process has


def test_a_queued_job_takes_a_free_slot_and_returns_its_result(tmp_path):
    with open(tmp_path / "slot0.lock", "w") as held:  # the first of two slots is taken
        fcntl.flock(held, fcntl.LOCK_EX)
        start = time.time()
        assert Queued(lambda: 42, tmp_path, 2, None)() == 42
    assert time.time() - start < 1, "it took the second slot at once"


def test_a_queued_job_after_one_that_did_not_succeed_is_not_run(tmp_path):
    ran = []
    with pytest.raises(RuntimeError, match=f"not run: job {GONE}, which it waits for, failed"):
        Queued(lambda: ran.append(1), tmp_path, 1, None, after=(GONE, tmp_path))()
    assert ran == []


def test_a_jobs_state_comes_from_its_folder_then_its_controller(tmp_path):
    executor = LocalExecutor()
    assert executor.array_size == 1 and executor.kind == "local"
    assert executor.state(GONE, tmp_path) == FAILED  # no result, no controller: it died
    cloudpickle_dump(("success", None), JobPaths(tmp_path, GONE, 0).result_pickle)
    assert executor.states([(GONE, tmp_path)]) == {GONE: FINISHED}
    other = tmp_path / "other"
    other.mkdir()
    cancelled_mark(GONE, other).touch()
    assert executor.state(GONE, other) == CANCELLED


def test_cancelling_a_job_that_no_longer_runs_changes_nothing(tmp_path):
    LocalExecutor().cancel(GONE, tmp_path)
    assert not cancelled_mark(GONE, tmp_path).exists() and LocalExecutor().state(GONE, tmp_path) == FAILED


@pytest.mark.slow  # its process waits 3 s for a slot
def test_a_local_job_waiting_for_a_training_slot_has_not_imported_torch(tmp_path):
    """A whole paper queues dozens of jobs on one machine: those that wait must stay small processes."""
    waiting = ("import sys, threading, time; from pathlib import Path; from sbrrepro.cluster.local import Queued; "
               f"threading.Thread(target=Queued(print, Path({str(tmp_path)!r}), 1, 2), daemon=True).start(); "
               "time.sleep(3); print('torch' in sys.modules)")
    with open(tmp_path / "slot0.lock", "w") as held:  # the machine's only slot is taken
        fcntl.flock(held, fcntl.LOCK_EX)
        out = subprocess.run([sys.executable, "-c", waiting], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False"], out.stderr[-2000:]


@pytest.mark.training  # submits a job
def test_a_local_job_keeps_none_of_the_submitters_output(tmp_path):
    """`sbrrepro run | tee log` (or a captured `run`) must end when `run` does: the job's controller
    keeps none of the submitting process's standard streams, while the job goes on."""
    submitter = ("import functools, time; from pathlib import Path; from sbrrepro.cluster.local import LocalExecutor; "
                 "print(LocalExecutor().submit(functools.partial(time.sleep, 60), "
                 f"Path({str(tmp_path)!r}), 'sleeper'))")
    start = time.time()
    out = subprocess.run([sys.executable, "-c", submitter], capture_output=True, text=True, timeout=50)
    returned = time.time() - start
    job_id = out.stdout.strip()
    assert out.returncode == 0 and job_id, out.stderr[-2000:]
    executor = LocalExecutor()
    try:
        assert returned < 30, f"the captured submitter returned after {returned:.0f} s, with its job"
        assert executor.state(job_id, tmp_path) == "running"
    finally:
        executor.cancel(job_id, tmp_path)
        settle(executor, job_id, tmp_path)
