"""Executors: one protocol, one conformance suite run against every executor this machine has
(the local one always; SLURM where a cluster answers), plus the sbatch lines a profile produces."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
from conftest import REPO, settle
from submitit.slurm.slurm import _make_sbatch_string

from sbrrepro.errors import UserError
from sbrrepro.executors import FAILED, FINISHED, RUNNING, SlurmExecutor, load_profile, make_executor


def test_a_job_that_returns_finishes(executor, tmp_path):
    job_id = executor.submit(functools.partial(time.sleep, 0.1), tmp_path, "ok")
    assert settle(executor, job_id, tmp_path) == FINISHED


def test_a_job_that_raises_fails(executor, tmp_path):
    job_id = executor.submit(functools.partial(int, "not a number"), tmp_path, "raises")
    assert settle(executor, job_id, tmp_path) == FAILED


def test_a_cancelled_job_fails(executor, tmp_path):
    job_id = executor.submit(functools.partial(time.sleep, 300), tmp_path, "long")
    deadline = time.time() + 60
    while executor.state(job_id, tmp_path) != RUNNING and time.time() < deadline:
        time.sleep(0.5)
    executor.cancel(job_id, tmp_path)
    assert settle(executor, job_id, tmp_path) == FAILED


def _sbatch(profile_path: Path) -> list[str]:
    params = SlurmExecutor(load_profile(str(profile_path))).parameters("sbrrepro-r3_cnn-abc")
    return _make_sbatch_string(command="python -m x", folder="/tmp/f", **params).splitlines()


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


@pytest.mark.parametrize(("text", "field", "problem"), [
    ("executor: slurm\npartition: 'gpu; rm -rf ~'\n", "partition", "letters, digits"),
    ("executor: slurm\nsbatch: {'mem; reboot': 1}\n", "sbatch", "sbatch parameter"),
    ("executor: kubernetes\n", "executor", "not one of"),
    ("executor: slurm\nnode: 2\n", "node", "unknown field"),
])
def test_unsafe_or_wrong_profiles_are_refused(tmp_path, cli, text, field, problem):
    profile = tmp_path / "bad.yaml"
    profile.write_text(text)
    with pytest.raises(UserError, match=problem):
        load_profile(str(profile))
    result = cli("run", str(REPO / "plans" / "table3.yaml"), "--smoke", "--dry-run", "--cluster", str(profile),
                 "--study", str(tmp_path / "s"))
    assert result.returncode == 2 and f"field '{field}'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()


def test_default_profile_is_this_machine():
    assert make_executor(load_profile(None)).kind == "local"
