"""The first two stages as one request: a row is decided once (its kind at plan load), each config is
built once and the study opened once, and one record per row flows on to the store."""

from __future__ import annotations

import sqlite3

import pytest

from sbrrepro import config_files
from sbrrepro.errors import UserError
from sbrrepro.plan import load_plan
from sbrrepro.prepare import Request, prepare
from sbrrepro.rows import CITED, COUNTED, DERIVED, TRAINED
from sbrrepro.study import SCHEMA_VERSION, Study
from tests.helpers import PLANS


def test_every_row_has_its_kind_from_its_plan():
    kinds = {row.kind for path in PLANS.glob("*/*.yaml") if path.name != "recipe.yaml"
             for row in load_plan(path).rows}
    assert kinds == {TRAINED, COUNTED, CITED, DERIVED}
    assert {row.kind for row in load_plan(PLANS / "sbr-cnn" / "table1.yaml").rows} == {COUNTED}


def test_a_full_scale_prepare_builds_each_config_once_and_opens_the_study_once(tmp_path, monkeypatch):
    built, opened = [], []
    real_build, real_open = config_files.keyed_config, Study.open.__func__
    monkeypatch.setattr(config_files, "keyed_config", lambda row, scale: built.append(row) or real_build(row, scale))
    monkeypatch.setattr(Study, "open", classmethod(lambda cls, *a, **k: opened.append(a) or real_open(cls, *a, **k)))
    # SCNet's Table 1 has test-dev rows: each evaluates a training of its own config (`-train`)
    request = Request([str(PLANS / "scnet" / "table1.yaml")], tmp_path / "study", data_root=str(tmp_path / "coco"),
                      dry_run=True, weights=str(tmp_path / "weights"))
    prepared = prepare(request)
    written = {rc.path for _, rc in prepared.rows} | {rc.train_path for _, rc in prepared.rows}
    assert any(rc.eval_only for _, rc in prepared.rows)
    assert len(built) == len(written) and len(opened) == 1
    assert [rc for _, rc in prepared.chosen] == [rc for _, rc in prepared.rows if rc.kind == TRAINED]


def test_the_chosen_rows_are_named_once_and_checked_before_anything_is_written(tmp_path):
    table3 = str(PLANS / "sbr-cnn" / "table3.yaml")
    prepared = prepare(Request([table3], tmp_path / "a", smoke=True, dry_run=True, rows=["4", "sbr-cnn/table3:2"]))
    assert [rc.row for _, rc in prepared.chosen] == [2, 4] and not prepared.whole
    assert len(prepared.rows) == 5, "every row of the plan is registered"
    with pytest.raises(UserError, match="'9' is not among the rows"):
        prepare(Request([table3], tmp_path / "b", smoke=True, dry_run=True, rows=["9"]))
    assert not (tmp_path / "b").exists()


def test_a_state_store_of_schema_3_gets_its_rows_kinds(tmp_path):
    plans = [str(PLANS / "sbr-cnn" / name) for name in ("table1.yaml", "table3.yaml")]
    before = prepare(Request(plans, tmp_path / "s", smoke=True, dry_run=True))
    con = sqlite3.connect(tmp_path / "s" / "state.sqlite")  # back to schema 3: no kind column
    con.executescript("ALTER TABLE rows DROP COLUMN kind; PRAGMA user_version = 3")
    con.close()
    rows = Study.open(tmp_path / "s").rows()
    assert sorted((rc.plan, rc.row, rc.kind) for _, rc in rows) == \
        sorted((rc.plan, rc.row, rc.kind) for _, rc in before.rows)
    assert {rc.kind for _, rc in rows if rc.plan == "sbr-cnn/table1"} == {COUNTED}
    con = sqlite3.connect(tmp_path / "s" / "state.sqlite")
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()
