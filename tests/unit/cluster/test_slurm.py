"""sbrrepro.cluster.slurm: the sbatch lines a cluster profile produces (nodes, GPUs in either dialect,
account, dependencies, array parallelism) and the size of the arrays, from the profile else the cluster;
no cluster needed (the job-level behaviour is the executors' conformance suite, test_cluster.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from submitit.slurm.slurm import _make_sbatch_string

from sbrrepro.cluster.local import LocalExecutor
from sbrrepro.cluster.profile import SLURM_MAX_ARRAY_SIZE, load_cluster
from sbrrepro.cluster.slurm import SlurmExecutor
from tests.helpers import REPO


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
