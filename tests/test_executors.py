"""Executors: one protocol, one conformance suite run against every executor this machine has
(the local one always; SLURM where a cluster answers), plus the sbatch lines a profile produces."""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TABLE3, settle
from submitit.slurm.slurm import _make_sbatch_string

from sbrrepro.cluster import CANCELLED, FAILED, FINISHED, RUNNING, make_executor
from sbrrepro.cluster.local import LocalExecutor
from sbrrepro.cluster.profile import PROFILE_FIELDS, SLURM_MAX_ARRAY_SIZE, ClusterProfile, load_cluster
from sbrrepro.cluster.slurm import SlurmExecutor
from sbrrepro.errors import UserError


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


def _sbatch(profile_path: Path, **extra) -> list[str]:
    params = SlurmExecutor(load_cluster(str(profile_path))).parameters("sbrrepro-r3_cnn-abc")
    return _make_sbatch_string(command="python -m x", folder="/tmp/f", **params, **extra).splitlines()


def test_paper_profile_asks_for_two_nodes_of_four_gpus():
    lines = _sbatch(REPO / "slurm" / "paper.yaml")
    for expected in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                     "#SBATCH --cpus-per-task=8", "#SBATCH --partition=gpu", "#SBATCH --time=2880",
                     "#SBATCH --mem=0", "#SBATCH --job-name=sbrrepro-r3_cnn-abc",
                     "source .venv/bin/activate"):
        assert expected in lines
    assert not any("--gres" in line for line in lines)


def test_gres_dialect_and_account(tmp_path):
    profile = tmp_path / "c.yaml"
    profile.write_text("executor: slurm\nnodes: 1\ngpus_per_node: 2\ngpu_flag: gres\naccount: lab-1\nqos: low\n")
    lines = _sbatch(profile)
    assert "#SBATCH --gres=gpu:2" in lines and "#SBATCH --ntasks-per-node=2" in lines
    assert "#SBATCH --account=lab-1" in lines and "#SBATCH --qos=low" in lines
    assert not any("--gpus-per-node" in line for line in lines)


def _fake_scontrol(tmp_path: Path, monkeypatch, config: str | None) -> None:
    """`scontrol show config` prints `config`; None: scontrol fails (no cluster answers)."""
    import os

    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    body = f"cat <<'EOF'\n{config}\nEOF\n" if config is not None else "exit 1\n"
    (shim / "scontrol").write_text("#!/bin/sh\n" + body)
    (shim / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(("fields", "cluster", "size"), [
    ("", "MaxArraySize            = 1001", 1),  # no array_parallelism: one job per training
    ("array_parallelism: 3\n", "MaxArraySize            = 40\nMaxJobCount = 10000", 40),
    ("array_parallelism: 3\n", None, SLURM_MAX_ARRAY_SIZE),
    ("array_parallelism: 3\n", "MaxArraySize            = 0", 1),  # arrays off on this cluster
    ("array_parallelism: 3\nmax_array_size: 2\n", "MaxArraySize            = 40", 2),
    ("array_parallelism: 3\nmax_array_size: 100\n", "MaxArraySize            = 40", 40),  # capped: sbatch refuses more
])
def test_array_size_comes_from_the_profile_else_the_cluster(tmp_path, monkeypatch, fields, cluster, size):
    _fake_scontrol(tmp_path, monkeypatch, cluster)
    profile = tmp_path / "c.yaml"
    profile.write_text("executor: slurm\n" + fields)
    assert SlurmExecutor(load_cluster(str(profile))).array_size == size
    assert LocalExecutor(load_cluster(str(profile))).array_size == 1  # local: its slots limit trainings


def test_an_array_asks_sbatch_for_its_parallelism_limit(tmp_path):
    profile = tmp_path / "c.yaml"
    profile.write_text("executor: slurm\narray_parallelism: 3\n")
    lines = _sbatch(profile, map_count=5)
    assert "#SBATCH --array=0-4%3" in lines and "#SBATCH --output=/tmp/f/%A_%a_0_log.out" in lines
    assert not any("--array" in line for line in _sbatch(profile))  # a single job: no array


def test_a_dependent_job_waits_for_success_and_is_cancelled_if_it_never_comes(tmp_path):
    profile = tmp_path / "c.yaml"
    profile.write_text("executor: slurm\nsbatch: {mem: 1000}\n")
    params = SlurmExecutor(load_cluster(str(profile))).parameters("eval", after=("12_3", tmp_path))
    lines = _make_sbatch_string(command="python -m x", folder="/tmp/f", **params).splitlines()
    expected = {"#SBATCH --dependency=afterok:12_3", "#SBATCH --kill-on-invalid-dep=yes", "#SBATCH --mem=1000"}
    assert expected <= set(lines)
    assert not any("--dependency" in line or "invalid-dep" in line for line in _sbatch(profile))


@pytest.mark.parametrize(("text", "field", "problem"), [
    ("executor: slurm\npartition: 'gpu; rm -rf ~'\n", "partition", "letters, digits"),
    ("executor: slurm\nsbatch: {'mem; reboot': 1}\n", "sbatch", "sbatch parameter"),
    ("executor: kubernetes\n", "executor", "not one of"),
    ("executor: slurm\nnode: 2\n", "node", "unknown field"),
    ("executor: slurm\narray_parallelism: 0\n", "array_parallelism", "must be > 0"),
    ("executor: slurm\nmax_array_size: many\n", "max_array_size", "expected an integer"),
])
def test_unsafe_or_wrong_profiles_are_refused(tmp_path, cli, text, field, problem):
    profile = tmp_path / "bad.yaml"
    profile.write_text(text)
    with pytest.raises(UserError, match=problem):
        load_cluster(str(profile))
    result = cli("run", str(TABLE3), "--smoke", "--dry-run", "--cluster", str(profile),
                 "--study", str(tmp_path / "s"))
    assert result.returncode == 2 and f"field '{field}'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()


def test_default_profile_is_this_machine():
    assert make_executor(load_cluster(None)).kind == "local"


def test_the_profile_has_a_field_per_schema_field_with_its_default_and_pickles():
    assert [f.name for f in dataclasses.fields(ClusterProfile)] == ["name", *PROFILE_FIELDS]
    assert ClusterProfile() == load_cluster(None)
    paper = load_cluster(str(REPO / "slurm" / "paper.yaml"))
    assert pickle.loads(pickle.dumps(paper)) == paper and paper.name == "paper" and paper.nodes == 2


def test_a_local_job_waiting_for_a_training_slot_has_not_imported_torch(tmp_path):
    """A whole paper queues dozens of jobs on one machine: those that wait must stay small processes."""
    waiting = ("import sys, threading, time; from pathlib import Path; from sbrrepro.cluster.local import Queued; "
               f"threading.Thread(target=Queued(print, Path({str(tmp_path)!r}), 1, 2), daemon=True).start(); "
               "time.sleep(3); print('torch' in sys.modules)")
    with open(tmp_path / "slot0.lock", "w") as held:  # the machine's only slot is taken
        fcntl.flock(held, fcntl.LOCK_EX)
        out = subprocess.run([sys.executable, "-c", waiting], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False"], out.stderr[-2000:]


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
