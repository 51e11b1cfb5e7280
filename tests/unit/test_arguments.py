"""sbrrepro.arguments: the grammar of `sbrrepro`: its subcommands, each run by cli.cmd_<name>, their
defaults and the values argparse refuses (exit 2) before any command runs."""

from __future__ import annotations

import argparse
import inspect
import re

import pytest

from sbrrepro import cli, versions
from sbrrepro.arguments import DEFAULT_STUDY, parser
from tests.helpers import REPO


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _refused(args: list[str], capsys) -> str:
    """argparse's refusal of `args`: exit status 2 and its message."""
    with pytest.raises(SystemExit) as e:
        parser().parse_args(args)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_every_subcommand_has_its_command_and_no_command_is_unreachable() -> None:
    commands = {name.replace("-", "_") for name in _subcommands()}
    handlers = {name.removeprefix("cmd_") for name, f in vars(cli).items() if name.startswith("cmd_") and callable(f)}
    assert commands == handlers
    for name in commands:  # each takes the parsed namespace alone
        assert list(inspect.signature(getattr(cli, f"cmd_{name}")).parameters) == ["args"]


def test_the_cli_docstring_lists_every_subcommand() -> None:
    listed = re.search(r"command: (.*?)\.\n", cli.__doc__, re.S).group(1)
    assert sorted(re.split(r",\s+", listed)) == sorted(_subcommands())


def test_a_subcommand_is_required(capsys) -> None:
    assert "the following arguments are required: command" in _refused([], capsys)


@pytest.mark.parametrize("command", sorted(set(_subcommands()) - {"doctor", "params"}))
def test_study_defaults_to_studies_default(command: str) -> None:
    """Every command that reads or writes a study takes --study, by default studies/default."""
    positional = {"import-stats": ["1", "stats.json"], "local-server": ["1"], "check-data": ["shapes"]}
    plans = ["p.yaml"] if command in ("run", "preflight", "speed") else []
    args = parser().parse_args([command, *plans, *positional.get(command, [])])
    assert args.study == str(DEFAULT_STUDY) == "studies/default"
    assert args.command == command


def test_run_defaults() -> None:
    args = parser().parse_args(["run", "a.yaml", "b.yaml"])
    assert args.plans == ["a.yaml", "b.yaml"]
    assert (args.smoke, args.dry_run, args.wait, args.retry_failed, args.json) == (False,) * 5
    assert (args.cluster, args.epochs, args.data_root, args.dataset, args.seeds, args.framework, args.rows) == \
        (None,) * 7


def test_numeric_defaults_and_types() -> None:
    pre = parser().parse_args(["preflight", "p.yaml"])
    assert (pre.steps, pre.image_size, pre.random_init) == (3, None, False)
    doctor = parser().parse_args(["doctor"])
    assert (doctor.folder, doctor.timeout, doctor.cluster) == ("studies/doctor", 10, None)
    assert isinstance(parser().parse_args(["doctor", "--timeout", "2.5"]).timeout, float)
    speed = parser().parse_args(["speed", "p.yaml", "--epochs", "2"])
    assert (speed.images, speed.epochs, speed.smoke) == (20, 2, False)
    assert parser().parse_args(["plot-iou"]).population == "proposals"


def test_plot_anchors_defaults_to_the_fig1_plan() -> None:
    args = parser().parse_args(["plot-anchors"])
    assert args.plan == "plans/sbr-cnn/fig1.yaml" and (REPO / args.plan).is_file()


def test_rows_take_several_selectors() -> None:
    args = parser().parse_args(["status", "--rows", "3", "sbr-cnn/table3:4", "scnet/table1:9@2"])
    assert args.rows == ["3", "sbr-cnn/table3:4", "scnet/table1:9@2"]


@pytest.mark.parametrize("args, said", [
    (["run"], "the following arguments are required: plans"),
    (["run", "p.yaml", "--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["run", "p.yaml", "--framework", "mmdet-4.0"], "argument --framework: invalid choice: 'mmdet-4.0'"),
    (["plot-iou", "--population", "negatives"], "argument --population: invalid choice: 'negatives'"),
    (["doctor", "--timeout", "soon"], "argument --timeout: invalid float value: 'soon'"),
    (["import-stats", "scnet/table1:9"], "the following arguments are required: stats"),
    (["status", "--rows"], "argument --rows: expected at least one argument"),
    (["collect", "--smoke"], "unrecognized arguments: --smoke"),
    (["train", "p.yaml"], "argument command: invalid choice: 'train'"),
])
def test_refused(args: list[str], said: str, capsys) -> None:
    assert said in _refused(args, capsys)


def test_version_says_what_is_not_installed(monkeypatch, capsys) -> None:
    monkeypatch.setattr(versions, "STACK", (*versions.STACK, "sbrrepro-no-such-distribution"))
    with pytest.raises(SystemExit) as e:
        parser().parse_args(["--version"])
    assert e.value.code == 0
    first, stack = capsys.readouterr().out.splitlines()
    assert first.startswith(f"sbrrepro {versions.installed('sbrrepro')} (commit ")
    assert stack.endswith(", sbrrepro-no-such-distribution not installed")
    assert f"torch {versions.installed('torch')}" in stack
