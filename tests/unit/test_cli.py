"""The command line as a user first meets it: every --help, --version, the main paper's plans by their
short path, and one row selector for run and status (a row trained first, the rest later)."""

from __future__ import annotations

import re

import pytest

from sbrrepro.cli import parser
from sbrrepro.plan import locate
from tests.helpers import REPO


def _commands() -> list[str]:
    sub = next(a for a in parser()._actions if a.dest == "command")
    return list(sub.choices)


def test_help_lists_every_command_and_each_commands_help_works(cli):
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    listed = set(re.findall(r"^    ([a-z-]+) ", result.stdout, re.M))
    assert listed == set(_commands()) and len(listed) >= 14
    for command in _commands():  # in this process: a help text argparse cannot format raises here
        with pytest.raises(SystemExit) as e:
            parser().parse_args([command, "--help"])
        assert e.value.code == 0, command


def test_version_names_sbrrepro_its_commit_and_the_pinned_stack(cli):
    from importlib.metadata import version

    result = cli("--version")
    assert result.returncode == 0, result.stderr
    first, stack = result.stdout.splitlines()
    assert re.fullmatch(rf"sbrrepro {re.escape(version('sbrrepro'))} \(commit [0-9a-f]+(-dirty)?\)", first), first
    for name in ("torch", "mmcv", "mmdet", "mmengine", "pycocotools", "submitit"):
        assert f"{name} {version(name)}" in stack


def test_a_flat_plan_path_is_the_main_papers_plan(cli, tmp_path):
    result = cli("run", "plans/table5.yaml", "--dry-run", "--study", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ("sbrrepro: plans/table5.yaml is the main paper's plan, "
                                     "plans/sbr-cnn/table5.yaml (sbr-cnn)")
    rows = re.findall(r"^sbr-cnn/table5 +row (\d+)", result.stdout, re.M)
    assert rows == [str(n) for n in range(1, len(rows) + 1)] and len(rows) >= 8


def test_an_existing_flat_plan_wins(tmp_path):
    (tmp_path / "plans" / "sbr-cnn").mkdir(parents=True)
    for path in (tmp_path / "plans" / "mine.yaml", tmp_path / "plans" / "sbr-cnn" / "mine.yaml",
                 tmp_path / "plans" / "sbr-cnn" / "table3.yaml"):
        path.write_text("paper: x\n")
    assert locate(tmp_path / "plans" / "mine.yaml") == tmp_path / "plans" / "mine.yaml"
    assert locate(tmp_path / "plans" / "table3.yaml") == tmp_path / "plans" / "sbr-cnn" / "table3.yaml"
    assert locate(tmp_path / "other" / "table3.yaml") == tmp_path / "other" / "table3.yaml"  # not a plans folder


@pytest.mark.training
def test_run_one_row_first_then_the_rest(cli, tmp_path):
    """`run --rows 1` registers every row of the plan, trains row 1 alone; a plain run would then
    submit the other rows and not row 1 again."""
    pytest.importorskip("mmcv._ext")
    study = str(tmp_path / "s")
    plan = str(REPO / "plans" / "sbr-cnn" / "table3.yaml")
    bad = cli("run", plan, "--smoke", "--rows", "9", "--study", study)
    assert bad.returncode == 2 and "'9' is not among the rows" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "s").exists(), "a bad selector leaves nothing written"

    first = cli("run", plan, "--smoke", "--epochs", "1", "--rows", "1", "--wait", "--study", study)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "submitted 1 job(s)" in first.stdout
    status = cli("status", "--study", study)
    states = dict(re.findall(r"^sbr-cnn/table3 +row (\d+) .*?  (done|new|failed|running|pending) ", status.stdout,
                             re.M))
    assert states == {"1": "done", "2": "new", "3": "new", "4": "new", "5": "new"}, status.stdout
    one = cli("status", "--rows", "sbr-cnn/table3:1", "--study", study)
    assert re.findall(r"^sbr-cnn/table3 +row (\d+)", one.stdout, re.M) == ["1"]

    rest = cli("run", plan, "--smoke", "--epochs", "1", "--dry-run", "--study", study)
    assert "would submit 4 job(s)" in rest.stdout, rest.stdout
