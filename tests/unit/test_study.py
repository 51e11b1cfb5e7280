"""A row may train with several seeds: each seed is a training of its own (its own key, its own
line in the state store, shared by every row that trains the same), and the plain run's seed keeps
the key it always had, so nothing trained before is trained again."""

from __future__ import annotations

import sqlite3

import pytest

from sbrrepro.study import SCHEMA_VERSION, Study
from tests.helpers import TABLE3, cli_json, copy_plan


def _dry(*args: str) -> list[dict]:
    return [r for r in cli_json("run", *args, "--smoke", "--dry-run") if "key" in r]


@pytest.mark.slow
def test_seeds_are_trainings_of_their_own_and_the_default_seed_keeps_its_key(tmp_path):
    plain = {r["row"]: r["key"] for r in _dry(str(TABLE3), "--study", str(tmp_path / "a"))}
    seeded = _dry(str(TABLE3), "--seeds", "3", "--study", str(tmp_path / "b"))
    assert [(r["row"], r["seed"]) for r in seeded] == [(n, s) for n in range(1, 6) for s in range(3)]
    assert len({r["key"] for r in seeded}) == 15 and all(r["would_submit"] for r in seeded)
    assert {r["row"]: r["key"] for r in seeded if r["seed"] == 0} == plain, "seed 0 is the training run before"


@pytest.mark.slow
def test_a_plans_seeds_and_a_rows_own(tmp_path):
    plan = copy_plan(tmp_path, "sbr-cnn/table3", rows=[1, 3], seeds=[0, 1], **{"rows.1.seeds": [5]})
    rows = _dry(str(plan), "--study", str(tmp_path / "s"))
    assert [(r["row"], r["seed"]) for r in rows] == [(1, 0), (1, 1), (3, 5)]


@pytest.mark.slow
def test_rows_with_the_same_training_share_each_seed(tmp_path):
    """Fig. 3's Mask R-CNN row at one epoch is Table 3's row 1: per seed, one training for both."""
    figure = copy_plan(tmp_path, "sbr-cnn/fig3", rows=[1])
    rows = _dry(str(TABLE3), str(figure), "--seeds", "2", "--epochs", "1", "--study", str(tmp_path / "s"))
    shared = [r for r in rows if r["row"] == 1]
    assert len(shared) == 4 and len({r["key"] for r in shared}) == 2


@pytest.mark.slow
def test_a_later_run_with_fewer_seeds_replaces_the_rows_it_registered(tmp_path):
    study = str(tmp_path / "s")
    _dry(str(TABLE3), "--seeds", "3", "--study", study)
    _dry(str(TABLE3), "--study", study)
    states = cli_json("status", "--study", study)
    assert [(s["row"], s["seed"]) for s in states] == [(n, 0) for n in range(1, 6)]


@pytest.mark.slow
def test_a_row_is_named_with_all_its_seeds_or_one(cli, tmp_path):
    study_root = tmp_path / "s"
    _dry(str(TABLE3), "--seeds", "2", "--study", str(study_root))
    study = Study.open(study_root)
    assert [rc.seed for _, rc in study.select_rows(["sbr-cnn/table3:4"])] == [0, 1]
    assert [rc.seed for _, rc in study.select_rows(["4@1"])] == [1]
    result = cli("local-server", "sbr-cnn/table3:4", "--study", str(study_root))
    assert result.returncode == 2 and "trains with 2 seeds: name one, e.g. sbr-cnn/table3:4@0" in result.stderr


@pytest.mark.slow
def test_a_state_store_of_schema_2_gets_the_seed_and_keeps_its_rows(tmp_path):
    study_root = tmp_path / "s"
    before = _dry(str(TABLE3), "--study", str(study_root))
    con = sqlite3.connect(study_root / "state.sqlite")  # back to schema 2: no seed column
    con.executescript("CREATE TABLE old AS SELECT plan, row, plan_path, model, label, config, key, train_config, "
                      "train_key FROM rows; DROP TABLE rows; ALTER TABLE old RENAME TO rows; PRAGMA user_version = 2")
    con.close()
    rows = Study.open(study_root).rows()
    assert [(rc.row, rc.seed, rc.key) for _, rc in rows] == [(r["row"], 0, r["key"]) for r in before]
    con = sqlite3.connect(study_root / "state.sqlite")
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()
