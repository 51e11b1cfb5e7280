"""`sbrrepro doctor`: on this machine (one local job) and against the real SLURM cluster that
slurm/cluster.sh starts (a job on one node and one on two nodes; skipped where none answers); bad input
is one line and exit status 2, with nothing submitted."""

from __future__ import annotations

import re

import pytest

from sbrrepro.cli import main
from sbrrepro.doctor import Column, _merge, failures, render
from tests.helpers import REPO, run_cli, slurm_profile


def _rows(out: str) -> dict[str, list[str]]:
    """The printed table: its cells by check (cells are separated by two spaces or more)."""
    lines = [line for line in out.splitlines() if re.match(r"\S.*\s{2,}", line)]
    return {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line) for line in lines)}


@pytest.mark.training
def test_on_this_machine_one_job_passes_every_check(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SBRREPRO_WEIGHTS", raising=False)
    code = main(["doctor", "--data-root", str(tmp_path), "--folder", str(tmp_path / "doctor")])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = _rows(out)
    assert rows["check"][1] == "2-node job" and rows["job"] == ["ok", "n/a"]
    for check in ("mmcv ops (RoIAlign, nms)", "deformable RoI pooling", "all-reduce (gloo)", "data root readable"):
        assert rows[check] == ["ok", "n/a"], out
    assert rows["weights cache readable"] == ["n/a", "n/a"]  # none given
    assert rows["tasks"][0] == "1" and out.rstrip().endswith("doctor: every check passed")


def test_a_check_failing_on_one_node_fails_its_job_and_names_the_node():
    tasks = [{"nodes": "n1", "tasks": "2", "data root readable": "ok"},
             {"nodes": "n2", "tasks": "2", "data root readable": "FAIL: /data: No such file or directory"}]
    column = Column("2-node job 7", {"job": "ok", **_merge(tasks)})
    assert column.cells == {"job": "ok", "nodes": "n1, n2", "tasks": "2",
                            "data root readable": "FAIL: /data: No such file or directory (n2)"}
    assert failures([column, Column("node job 6", {"job": "ok"})]) == 1
    rows = _rows(render([Column("node job 6", {"job": "ok"}), column]))
    assert rows["data root readable"] == ["-", "FAIL: /data: No such file or directory (n2)"]


@pytest.mark.slurm
def test_on_slurm_a_node_job_and_a_two_node_job_pass_every_check(tmp_path, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    code = main(["doctor", "--cluster", str(REPO / "slurm" / "local-test.yaml"), "--data-root", str(tmp_path),
                 "--weights", str(weights), "--folder", str(tmp_path / "doctor")])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = _rows(out)
    assert rows["tasks"] == ["1", "2"] and rows["nodes"][1] == "n1, n2", out
    for check in ("job", "mmcv ops (RoIAlign, nms)", "deformable RoI pooling", "all-reduce (gloo)",
                  "data root readable", "weights cache readable"):
        assert rows[check] == ["ok", "ok"], out


@pytest.mark.slurm
def test_a_partition_slurm_refuses_is_one_line(tmp_path):
    profile = slurm_profile(tmp_path, partition="nosuchpartition")
    result = run_cli("doctor", "--cluster", str(profile), "--data-root", str(tmp_path), "--folder",
                     str(tmp_path / "doctor"), timeout=120)
    assert result.returncode == 2 and result.stdout == "", result.stdout
    assert result.stderr.count("\n") == 1 and "invalid partition" in result.stderr.lower(), result.stderr
    assert str(profile) in result.stderr


@pytest.mark.slow
def test_a_missing_data_root_is_one_line_and_submits_nothing(tmp_path):
    result = run_cli("doctor", "--cluster", str(REPO / "slurm" / "local-test.yaml"), "--data-root",
                     str(tmp_path / "missing"), "--folder", str(tmp_path / "doctor"), timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    missing = tmp_path / "missing"
    assert result.stderr == f"sbrrepro: error: command line: field '--data-root': {missing}: no such folder\n"
    assert not (tmp_path / "doctor").exists()
