"""sbrrepro.progress: the epoch a running training has reached, and the one-line summary of a study's
rows that `status` and the wait loop print."""

from __future__ import annotations

from sbrrepro import jobs
from tests.helpers import write_scalars


def test_progress_names_the_epoch_each_running_training_reached(tmp_path):
    from sbrrepro.layout import RunPaths
    from sbrrepro.progress import epoch, summary

    run = RunPaths(tmp_path / "run")
    write_scalars(run, [{"loss": 2.0, "epoch": e, "iter": 1, "step": e} for e in (1, 2, 3)])
    config = tmp_path / "row.py"
    config.write_text("train_cfg = {'type': 'EpochBasedTrainLoop', 'max_epochs': 12, 'val_interval': 1}\n")
    assert epoch(run, config) == "epoch 3/12"
    states = [jobs.RowState("p", n, "x", str(config), f"k{n}", "h", f"k{n}", False, s)
              for n, s in ((1, "done"), (2, "running"), (3, "pending"), (4, "failed"))]
    assert summary(states, {"k2": "epoch 3/12"}) == "rows done: 1 of 4 · failed: 1 · pending: 1 · running: 1 · " \
                                                   "row 2 epoch 3/12"


def test_fit_cuts_a_line_to_the_terminals_width():
    from sbrrepro.progress import fit

    assert fit("rows done: 1 of 4", 17) == "rows done: 1 of 4"
    assert fit("rows done: 1 of 4", 10) == "rows done…" and len(fit("x" * 100, 10)) == 10
    assert fit("rows", 0) == "…"


def test_the_summary_counts_rows_and_runs_apart_where_rows_have_seeds():
    from sbrrepro.progress import summary

    def state(row: int, seed: int, what: str) -> jobs.RowState:
        return jobs.RowState("p", row, "x", "row.py", f"k{row}-{seed}", "h", f"k{row}-{seed}", False, what, seed=seed)

    states = [state(1, 0, "done"), state(1, 1, "running"), state(2, 0, "awaiting server"), state(3, 0, "new")]
    assert summary(states, {}) == "rows done: 1 of 3 (runs: 2 of 4) · new: 1 · running: 1 · awaiting server: 1"
    assert summary([], {}) == "rows done: 0 of 0"


def test_no_epoch_is_named_before_the_log_or_for_an_iteration_schedule(tmp_path):
    from sbrrepro.layout import RunPaths
    from sbrrepro.progress import epoch

    run, config = RunPaths(tmp_path / "run"), tmp_path / "row.py"
    assert epoch(run, config) is None  # neither its config nor its log yet
    config.write_text("train_cfg = {'type': 'EpochBasedTrainLoop', 'max_epochs': 12, 'val_interval': 1}\n")
    assert epoch(run, config) is None  # no epoch logged yet
    write_scalars(run, [{"loss": 2.0, "epoch": 1, "iter": 1, "step": 1}])
    assert epoch(run, config) == "epoch 1/12"
    config.write_text("train_cfg = {'type': 'IterBasedTrainLoop', 'max_iters': 4000, 'val_interval': 4000}\n")
    assert epoch(run, config) is None
