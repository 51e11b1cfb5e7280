"""sbrrepro.views: what `collect` and `status` print, in a real terminal (fitted to its width, styled)
and in a pipe (the whole width, plain)."""

from __future__ import annotations

import re

import pytest

from tests.helpers import REPO


def _in_terminal(args: list[str], columns: int) -> str:
    """What a command prints to a real terminal (a pseudo-terminal `columns` wide)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "sbrrepro", *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=REPO, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the command has ended and closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0, out.decode(errors="replace")[-3000:]
    return out.decode().replace("\r\n", "\n")


@pytest.mark.slow  # three commands, each a process of its own
def test_collect_and_status_fit_a_terminal_and_stay_plain_in_a_pipe(crafted, cli):
    _, study, _ = crafted
    shown = _in_terminal(["collect", "--study", str(study.root)], 70)
    assert "\033[1m41.0\033[0m" in shown, "best of our column in bold"
    table = shown.split("\n\n")[0].splitlines()
    assert all(len(re.sub(r"\033\[\d+m", "", line)) <= 70 for line in table if line[:1] in "#12345678"), table
    piped = cli("collect", "--study", str(study.root)).stdout
    assert "\033[" not in piped and max(map(len, piped.splitlines())) > 70, "a pipe gets the whole width, plain"
    status = _in_terminal(["status", "--study", str(study.root)], 60).splitlines()
    assert all(len(line) <= 60 for line in status[:-1]), status  # the last: a command to copy, whole
    assert status[-2] == "rows done: 4 of 6 (runs: 6 of 8) · new: 2"  # row 1: three seeds, three runs
    assert status[-1] == f"watch the curves: tensorboard --logdir {study.root / 'runs'}"


# ---- the views on crafted row states, as printed (no terminal: the whole width)


def _state(row: int, state: str, **fields):
    from sbrrepro.jobs import RowState

    key = f"r3_cnn-{row}a{row}a"
    return RowState(**{"plan": "sbr-cnn/table3", "row": row, "label": f"R{row}", "config": "row.py", "key": key,
                       "hash": key.rsplit("-", 1)[1], "train_key": key, "eval_only": False, "state": state, **fields})


def test_states_as_json_mark_what_a_dry_run_would_submit_and_list_the_rows_without_jobs(capsys):
    import json

    from sbrrepro import views
    from sbrrepro.plan import load_plan
    from tests.helpers import PLANS

    states = [_state(1, "done", job_id="12", executor="local"), _state(2, "new")]
    views.states(states, True, todo={states[1].key}, plans=[load_plan(PLANS / "scnet" / "table2.yaml")])
    shown = json.loads(capsys.readouterr().out)
    assert shown[:2] == json.loads(json.dumps([{**states[0].to_json(), "would_submit": False},
                                               {**states[1].to_json(), "would_submit": True}]))
    assert shown[2:] == [{"plan": "scnet/table2", "row": 7, "label": "Overall Improvement", "state": "derived",
                          "derived": "row 6 - row 1"}]


def test_states_as_lines_with_their_jobs_logs_uploads_epochs_and_the_summary(capsys):
    from sbrrepro import views
    from sbrrepro.plan import load_plan
    from tests.helpers import PLANS

    trained = _state(1, "done", job_id="12", executor="local")
    states = [trained,
              _state(2, "failed", eval_only=True, train_key=trained.key, job_id="13", executor="slurm",
                     log="/s/13_0_log.err", log_tail="Traceback (most recent call last):\nValueError: x"),
              _state(3, "awaiting server", uploads=("/s/upload_bbox.zip",)), _state(4, "running")]
    views.states(states, False, plans=[load_plan(PLANS / "scnet" / "table1.yaml")],
                 epochs={states[3].key: "epoch 3/12"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["sbr-cnn/table3", "row", "1", "R1", "done", trained.key, "local", "job", "12"]
    assert "slurm job 13" in lines[1] and lines[1].endswith(f"evaluates {trained.key}")
    assert lines[2:5] == ["    /s/13_0_log.err:", "    | Traceback (most recent call last):", "    | ValueError: x"]
    assert lines[5].split()[3:6] == ["R3", "awaiting", "server"]
    assert lines[6] == "    for the evaluation server: /s/upload_bbox.zip"
    assert "running (epoch 3/12)" in lines[7] and "seed" not in "\n".join(lines), "one seed: no seed column"
    assert lines[8].split()[:4] == ["scnet/table1", "row", "2", "PANet"] and "cited" in lines[8]
    assert lines[8].endswith("Liu et al., Path Aggregation Network for Instance Segmentation (PANet), CVPR 2018")
    assert len(lines) == 8 + 5 + 1  # five cited rows, then the summary
    assert lines[-1] == "rows done: 2 of 4 · failed: 1 · running: 1 · awaiting server: 1 · row 4 epoch 3/12"


def test_rows_with_several_seeds_show_the_seed_and_a_dry_run_no_summary(capsys):
    from sbrrepro import views

    states = [_state(1, "new", key="m-1a", seed=0), _state(1, "new", key="m-1b", seed=1)]
    views.states(states, False, todo={"m-1a", "m-1b"})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3:5] for line in lines] == [["seed", "0"], ["seed", "1"]]


def test_a_path_is_shown_as_a_user_would_type_it_here(tmp_path, monkeypatch):
    from pathlib import Path

    from sbrrepro.views import shell_path

    monkeypatch.chdir(tmp_path)
    assert shell_path(tmp_path / "study" / "weights") == "study/weights"
    assert shell_path(Path("/elsewhere/weights")) == "/elsewhere/weights"


def test_preflight_findings_and_what_collect_wrote_a_line_each(tmp_path, capsys):
    from sbrrepro import views
    from sbrrepro.collect import Collected
    from sbrrepro.preflight import Finding
    from sbrrepro.study import Study

    found = Finding("r3_cnn-1a1a", ["sbr-cnn/table3:3", "sbr-cnn/table4:4"], "cpu", "cpu", [1333, 800], 2, 3, "coco",
                    "random", error="RuntimeError: out of memory")
    views.preflight([found], "preflight:")
    assert capsys.readouterr().out.splitlines() == [
        "preflight:", f"  r3_cnn-1a1a (sbr-cnn/table3:3, sbr-cnn/table4:4): {found.line()}"]
    study = Study(tmp_path / "s", "full")
    done = Collected(study.paths.results, [study.paths.report("sbr-cnn/table3", ".md")], [], {},
                     [study.paths.figure("sbr-cnn/fig3").with_suffix(".png")], {"groie/fig2": "no run has finished"})
    views.collected(study, done)
    assert capsys.readouterr().out.splitlines() == [
        f"results: {study.paths.results} (results.csv, results.parquet beside it)",
        f"table: {study.paths.report('sbr-cnn/table3', '.md')}",
        f"figure: {study.paths.root / 'figures' / 'sbr-cnn-fig3.png'}",
        "figure groie/fig2: not drawn yet: no run has finished"]
