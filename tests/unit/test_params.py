"""sbrrepro.params: a plan's parameter counts as the table model (per row the count, each counted column
beside the published one, the verdict a count gets), the counts of a plan read from a Counts file
without building a model, and that file's checks. No model is counted here: a count builds the model
at the paper's scale (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sbrrepro import params
from sbrrepro.errors import UserError
from sbrrepro.params import Counted, Counts, count_plan, param_metrics, table
from sbrrepro.plan import Plan, Row, load_plan
from sbrrepro.render import to_terminal
from sbrrepro.verdicts import COUNTED, NOT_REPRODUCED, OWN, REPRODUCED
from sbrrepro.verify import MATCH, MISMATCH, MISSING, Cell
from tests.helpers import DELETE, PLANS, copy_plan

# SBR-CNN Table 1's published counts: one layer each, compared exactly
TABLE1 = {1: 12_846_080, 2: 1_605_760, 3: 1_376_512, 4: 688_256, 5: 1_049_600, 6: 401_472, 7: 344_192, 8: 172_096}


def _plan(name: str) -> Plan:
    return load_plan(PLANS / f"{name}.yaml")


def _key(row: Row) -> str:
    return json.dumps([row.model, row.options], sort_keys=True)


@pytest.fixture
def no_counting(monkeypatch) -> None:
    """A test that would build a model to count it fails instead."""
    def count(row: Row) -> int:
        raise AssertionError(f"row {row.number} was counted")
    monkeypatch.setattr(params, "count", count)


def _counted(row: int, trainable: int, ours: dict, published: dict, note: str | None = None,
             verdict: str = MATCH) -> Counted:
    return Counted(row, f"row {row}", trainable, published, ours, verdict, note)


def test_param_metrics() -> None:
    assert param_metrics(_plan("sbr-cnn/table1")) == ["params"]
    assert param_metrics(_plan("sbr-cnn/table2")) == ["params_K"]
    assert param_metrics(_plan("sbr-cnn/table6")) == ["params_M"]
    assert param_metrics(_plan("sbr-cnn/table4")) == []


def test_table_of_exact_counts() -> None:
    """Table 1 counts single layers: a count one parameter off is not reproduced."""
    plan = _plan("sbr-cnn/table1")
    rows = [_counted(1, TABLE1[1], {"params": TABLE1[1]}, {"params": TABLE1[1]}),
            _counted(2, TABLE1[2] + 1, {"params": TABLE1[2] + 1}, {"params": TABLE1[2]}, note="bias counted twice",
                     verdict=MISMATCH)]
    t = table(plan, rows)
    assert (t.title, t.lead, t.metrics) == ("sbr-cnn/table1: trainable parameters", ["#", "row", "trainable"],
                                            ["params"])
    assert [r.lead for r in t.rows] == [["1", "row 1", "12,846,080"], ["2", "row 2", "1,605,761"]]
    assert t.rows[0].cells["params"] == Cell(12_846_080.0, 12_846_080, None, 1)
    assert t.rows[1].cells["params"].diff == 1
    assert [r.verdict for r in t.rows] == [REPRODUCED, NOT_REPRODUCED]
    assert t.notes == ["Row 2: bias counted twice"]


def test_table_within_one_percent() -> None:
    """Counts in millions match within 1% of the published number (43.9M for Table 6 row 2)."""
    plan = _plan("sbr-cnn/table6")
    t = table(plan, [_counted(2, 44_300_000, {"params_M": 44.3}, {"params_M": 43.9}, note="kept: matched"),
                     _counted(3, 33_000_000, {"params_M": 33.0}, {"params_M": 32.2}, verdict=MISMATCH)])
    assert t.metrics == ["params_M"] and [r.verdict for r in t.rows] == [REPRODUCED, NOT_REPRODUCED]
    assert t.rows[0].cells["params_M"].published == 43.9 and t.rows[1].cells["params_M"].published == 32.2
    assert t.notes == []  # a note only where the count does not match


def test_table_with_nothing_published_to_compare() -> None:
    """A plan that prints no count is counted in millions, each row marked counted (nothing to judge)."""
    plan = _plan("sbr-cnn/table4")
    t = table(plan, [_counted(1, 44_000_000, {"params_M": 44.0}, {"params_M": None}, note="n", verdict=MISSING)])
    assert t.metrics == ["params_M"] and t.rows[0].cells["params_M"] == Cell(None, 44.0, None, 1)
    assert t.rows[0].verdict == COUNTED and t.notes == ["Row 1: n"]


def test_table_of_an_own_study(tmp_path: Path) -> None:
    """A plan without published numbers: each count is the study's own."""
    plan = load_plan(copy_plan(tmp_path, "sbr-cnn/table1", rows=[1], published=DELETE))
    t = table(plan, [_counted(1, TABLE1[1], {"params": TABLE1[1]}, {"params": None})])
    assert t.rows[0].verdict == OWN and t.rows[0].cells["params"] == Cell(None, TABLE1[1], None, 1)


def test_table_renders() -> None:
    text = to_terminal(table(_plan("sbr-cnn/table1"), [_counted(1, TABLE1[1], {"params": TABLE1[1]},
                                                                {"params": TABLE1[1]})]))
    assert "12,846,080" in text and "reproduced" in text and "sbr-cnn/table1: trainable parameters" in text


def test_count_plan_from_a_counts_file(tmp_path: Path, no_counting) -> None:
    """Rows that share a model and options share a count; the published column is read from the plan's CSV."""
    plan = _plan("sbr-cnn/table1")
    path = tmp_path / "params.json"
    path.write_text(json.dumps({_key(r): TABLE1[r.number] + (r.number == 8) for r in plan.rows}))
    counted = count_plan(plan, Counts(path))
    assert [c.row for c in counted] == list(TABLE1)
    assert [c.verdict for c in counted] == [MATCH] * 7 + [MISMATCH]
    assert counted[0].to_json() == {"row": 1, "label": "FC 1", "trainable": 12_846_080, "ours": {"params": 12_846_080},
                                    "published": {"params": 12_846_080.0}, "verdict": MATCH, "note": None}
    assert counted[7].ours == {"params": 172_097}


def test_count_plan_without_a_published_column(tmp_path: Path, no_counting) -> None:
    plan = _plan("sbr-cnn/table4")
    path = tmp_path / "params.json"
    path.write_text(json.dumps({_key(r): 43_912_345 for r in plan.rows}))
    counted = count_plan(plan, Counts(path))
    assert {c.verdict for c in counted} == {MISSING}
    assert counted[1].ours == {"params_M": 43.912345} and counted[1].published == {"params_M": None}


def test_counts_read_once_and_written_at_each_new_count(tmp_path: Path, monkeypatch) -> None:
    """`count` stands in for building the model: what is held is Counts' memory and its file."""
    counted: list[int] = []
    monkeypatch.setattr(params, "count", lambda row: counted.append(row.number) or 1000 + row.number)
    rows = _plan("sbr-cnn/table1").rows
    path = tmp_path / "params.json"
    counts = Counts(path)
    assert counts(rows[0]) == 1001 and counts(rows[0]) == 1001 and counted == [1]
    assert json.loads(path.read_text()) == {_key(rows[0]): 1001}
    assert Counts(path)(rows[0]) == 1001 and counted == [1]  # a new process reads it
    assert Counts(path)(rows[1]) == 1002 and counted == [1, 2]
    assert json.loads(path.read_text()) == {_key(rows[0]): 1001, _key(rows[1]): 1002}
    assert Counts()(rows[0]) == 1001 and counted == [1, 2, 1]  # no file: counted in memory only
    assert Counts(tmp_path / "none.json").known == {}


@pytest.mark.parametrize("text, field, said", [
    ('{"a": -1}', "a", "is -1, not an integer, at least 0, at most 1e+15"),
    ('{"a": 1.5}', "a", "is 1.5, not an integer"),
    ('{"a": true}', "a", "is True, not an integer"),
    ("[1]", None, "is [1], not an object"),
    ('{"a": 1', None, "not valid JSON"),
])
def test_damaged_counts_file(tmp_path: Path, text: str, field: str | None, said: str) -> None:
    path = tmp_path / "params.json"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        Counts(path)
    assert (e.value.where, e.value.field) == (str(path), field)
    assert said in e.value.message and e.value.message.endswith("delete it: sbrrepro counts them again")
