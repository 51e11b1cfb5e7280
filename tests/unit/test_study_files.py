"""sbrrepro.study_files: a study's JSON file is read with its shape checked once, so that a file edited by
hand, cut short, of another version or with a folder in its place is one UserError naming the file, the
field, what sbrrepro expects there and what to do; the shapes of what a run's jobs write."""

from __future__ import annotations

import json
import math

import pytest

from sbrrepro.errors import UserError
from sbrrepro.study_files import KEY, TIME, TRAINED, Number, Text, done, problem, provenance, read

SHAPE = {"scale": ("smoke", "full"), "dataset?": (str, None), "keys": [KEY, ...], "hours": {str: Number(0, 1e6)},
         "pair": [bool, Number(integer=True)]}
GOOD = {"scale": "full", "keys": ["mask_rcnn-fe15e8fd2b95", "r3_cnn-1d0fdd88a6fb-sizes"], "hours": {"a": 1.5},
        "pair": [True, 3], "other": "let be"}


def _write(tmp_path, value) -> object:
    path = tmp_path / "file.json"
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def test_a_file_of_its_shape_is_read_as_it_is(tmp_path):
    assert read(_write(tmp_path, GOOD), SHAPE, "a thing", "fix it") == GOOD
    assert problem({**GOOD, "dataset": None}, SHAPE) is None


@pytest.mark.parametrize(("change", "field", "said"), [
    ({"scale": "huge"}, "scale", "is 'huge', not 'smoke' or 'full'"),
    ({"keys": ["mask_rcnn-fe15e8fd2b95", "../x"]}, "keys.1", "not a run key (<model>-<hash>)"),
    ({"hours": {"a": -1}}, "hours.a", "not a finite number, at least 0, at most 1e+06"),
    ({"pair": [True, 1.5]}, "pair.1", "not an integer"),
    ({"pair": [True]}, "pair", "has 1 items, not 2"),
    ({"keys": "a-1"}, "keys", "is 'a-1', not a list"),
])
def test_a_value_of_another_shape_is_one_error_naming_its_field(tmp_path, change, field, said):
    path = _write(tmp_path, {**GOOD, **change})
    with pytest.raises(UserError) as e:
        read(path, SHAPE, "a thing", "fix it")
    assert (e.value.where, e.value.field) == (str(path), field)
    assert said in e.value.message and e.value.message.endswith("; expected a thing; fix it"), e.value.message


def test_a_missing_field_a_file_cut_short_and_a_folder_in_its_place_are_one_error_each(tmp_path):
    short = {k: v for k, v in GOOD.items() if k != "hours"}
    with pytest.raises(UserError, match="field 'hours': is missing; expected a thing; fix it"):
        read(_write(tmp_path, short), SHAPE, "a thing", "fix it")
    with pytest.raises(UserError, match="fix it$"):
        read(_write(tmp_path, json.dumps(GOOD)[:20]), SHAPE, "a thing", "fix it")
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(UserError, match="cannot be read .*; fix it$"):
        read(folder, SHAPE, "a thing", "fix it")


def test_numbers_and_texts_hold_only_what_they_say():
    assert not any(Number().holds(x) for x in (math.nan, math.inf, True, "1", None))
    assert Number(0, 1).holds(1) and not Number(0, 1).holds(1.01) and not Number(integer=True).holds(1.0)
    assert TIME.holds(1_700_000_000.0) and not TIME.holds(-1)
    assert Text(r"[a-z]+", "a word").holds("abc") and not Text(r"[a-z]+", "a word").holds("abc1")
    assert str(Number(0, 5, integer=True)) == "an integer, at least 0, at most 5"


def test_what_a_runs_jobs_write(tmp_path):
    path = _write(tmp_path, {"finished": 1_700_000_000.0, "iters": 4, "metrics": {"coco/bbox_mAP": 0.1}})
    assert done(path, TRAINED)["iters"] == 4
    with pytest.raises(UserError, match="sbrrepro run PLAN --retry-failed"):
        done(_write(tmp_path, {"finished": 1.0}), TRAINED)  # neither epochs nor iters
    prov = {"started": 1.0, "processes": 8, "gpus": 8, "device": "cuda", "batch": 16, "lr_effective": 0.02,
            "lr_scaled": False, "versions": {"mmdet": "3.3.0", "git": None}}
    assert provenance(_write(tmp_path, prov)) == prov
    with pytest.raises(UserError, match="field 'processes': is 0, not an integer, at least 1"):
        provenance(_write(tmp_path, {**prov, "processes": 0}))
