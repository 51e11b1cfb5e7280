"""sbrrepro.rows: a row's record (evaluation-only where it runs another training's weights), the row
kinds and states, and `trained` keeping the rows that run jobs; imported without the config builder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sbrrepro import rows
from sbrrepro.rows import COUNTED, TRAINED, RowConfig, trained
from tests.helpers import imported_by


def _rc(row: int, key: str = "r3_cnn-aaa", train_key: str | None = None, kind: str = TRAINED) -> RowConfig:
    return RowConfig("sbr-cnn/table4", row, "r3_cnn", f"row {row}", Path(f"c{row}.py"), key, Path("t.py"),
                     train_key or key, kind=kind)


def test_defaults() -> None:
    rc = _rc(1)
    assert (rc.seed, rc.kind) == (0, TRAINED)


def test_eval_only_where_the_keys_differ() -> None:
    assert not _rc(4, "r3_cnn-aaa").eval_only
    assert _rc(2, "r3_cnn-bbb", train_key="r3_cnn-aaa").eval_only


def test_frozen_and_hashable() -> None:
    """A record is a value: the store and the selectors use it as a dict key."""
    rc = _rc(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rc.key = "other"  # type: ignore[misc]
    assert {rc: 1}[_rc(1)] == 1 and rc != dataclasses.replace(rc, seed=1)


def test_trained_keeps_order_and_the_rows_with_jobs() -> None:
    pairs = [("a.yaml", _rc(1)), ("a.yaml", _rc(2, kind=COUNTED)), ("b.yaml", _rc(3)), ("b.yaml", _rc(3, "x-1"))]
    assert trained(pairs) == [pairs[0][1], pairs[2][1], pairs[3][1]]
    assert trained([]) == []


def test_kinds_and_states_distinct() -> None:
    assert rows.KINDS == ("trained", "counted", "cited", "derived")
    states = (rows.NEW, rows.PENDING, rows.RUNNING, rows.AWAITING, rows.DONE, rows.FAILED, rows.CANCELLED)
    assert len(set(states)) == 7 and rows.AWAITING == "awaiting server"


def test_import_is_light() -> None:
    """Jobs, the server and the figures read rows through this module alone: no config builder, no torch."""
    assert imported_by("sbrrepro.rows", ("sbrrepro.", "torch", "mmdet", "mmengine")) == ["sbrrepro.rows"]
