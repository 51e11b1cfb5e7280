"""sbrrepro.schema: `validate` fills defaults, normalises numbers and reports the first bad field as one
UserError naming the file, the dotted field and what would be right; `one_of` and `positive` say what is
wrong or nothing."""

from __future__ import annotations

import pytest

from sbrrepro.errors import UserError
from sbrrepro.schema import REQUIRED, Field, one_of, positive, validate

FIELDS = {
    "name": Field(str),
    "lr": Field(float, check=positive, help="the base learning rate"),
    "epochs": Field(int, 12, positive),
    "steps": Field(("list", int), [8, 11]),
    "scales": Field(("list", float), []),
    "kind": Field(str, "SGD", one_of("SGD", "Adam")),
    "flip": Field(bool, False),
    "extra": Field(dict, {}),
}


def _error(data, fields=FIELDS, prefix: str = "") -> UserError:
    with pytest.raises(UserError) as e:
        validate(data, fields, "plan.yaml", prefix)
    return e.value


def test_defaults_filled_and_integers_become_floats() -> None:
    out = validate({"name": "a", "lr": 2, "scales": [1, 0.5]}, FIELDS, "plan.yaml")
    assert out == {"name": "a", "lr": 2.0, "epochs": 12, "steps": [8, 11], "scales": [1.0, 0.5], "kind": "SGD",
                   "flip": False, "extra": {}}
    assert type(out["lr"]) is float and [type(v) for v in out["scales"]] == [float, float]
    assert list(out) == list(FIELDS)  # in the schema's order


def test_input_not_modified() -> None:
    data = {"name": "a", "lr": 1}
    validate(data, FIELDS, "plan.yaml")
    assert data == {"name": "a", "lr": 1}


@pytest.mark.parametrize("data, field, message", [
    ({"lr": 0.1}, "name", "missing; expected a string"),
    ({"name": "a"}, "lr", "missing; expected a number (the base learning rate)"),
    ({"name": "a", "lr": "0.1"}, "lr", "expected a number, got '0.1' (the base learning rate)"),
    ({"name": "a", "lr": True}, "lr", "expected a number, got True (the base learning rate)"),  # not 1.0
    ({"name": "a", "lr": 0.1, "epochs": 1.5}, "epochs", "expected an integer, got 1.5"),
    ({"name": "a", "lr": 0.1, "epochs": True}, "epochs", "expected an integer, got True"),
    ({"name": "a", "lr": 0.1, "flip": 1}, "flip", "expected true or false, got 1"),
    ({"name": "a", "lr": 0.1, "extra": [1]}, "extra", "expected a mapping, got [1]"),
    ({"name": "a", "lr": 0.1, "steps": [8, "11"]}, "steps", "expected a list of integers, got [8, '11']"),
    ({"name": "a", "lr": 0.1, "steps": 8}, "steps", "expected a list of integers, got 8"),
    ({"name": "a", "lr": 0.1, "scales": [True]}, "scales", "expected a list of numbers, got [True]"),
    ({"name": "a", "lr": -1}, "lr", "must be > 0, got -1.0"),
    ({"name": "a", "lr": 0.1, "epochs": 0}, "epochs", "must be > 0, got 0"),
    ({"name": "a", "lr": 0.1, "kind": "Lion"}, "kind", "'Lion' is not one of: SGD, Adam"),
    ({"name": "a", "lr": 0.1, "lrr": 1}, "lrr", "unknown field; the known fields are: name, lr, epochs, steps, "
                                                "scales, kind, flip, extra"),
])
def test_bad_field(data: dict, field: str, message: str) -> None:
    e = _error(data)
    assert (e.where, e.field, e.message) == ("plan.yaml", field, message)


def test_first_unknown_field_alphabetically_and_before_missing_ones() -> None:
    assert _error({"zz": 1, "aa": 2}).field == "aa"


def test_prefix_names_the_nested_field() -> None:
    e = _error({"name": "a", "lr": 0}, prefix="rows[2].recipe.")
    assert str(e) == "plan.yaml: field 'rows[2].recipe.lr': must be > 0, got 0.0"


@pytest.mark.parametrize("data, prefix, field, said", [
    ([1, 2], "", None, "expected a mapping, got list"),
    (None, "rows[0].options.", "rows[0].options", "expected a mapping, got NoneType"),
    ({1: "a"}, "", None, "field names are strings, got 1 (int)"),
    ({True: "a"}, "recipe.", "recipe", "field names are strings, got True (bool)"),  # YAML's `on:` / `yes:`
    ({None: "a"}, "", None, "field names are strings, got None (NoneType)"),
])
def test_not_a_mapping_of_names(data, prefix: str, field: str | None, said: str) -> None:
    e = _error(data, prefix=prefix)
    assert (e.field, e.message) == (field, said)


@pytest.mark.parametrize("data, field", [({"lr": 10**400}, "lr"), ({"scales": [1.0, -(10**400)]}, "scales")])
def test_huge_integer_for_a_float_is_one_error(data: dict, field: str) -> None:
    e = _error({"name": "a", "lr": 1, **data})
    assert e.field == field and e.message == "a number of 401 digits is beyond any float"


def test_huge_integer_for_an_int_is_kept() -> None:
    assert validate({"n": 10**400}, {"n": Field(int)}, "f")["n"] == 10**400


def test_describe() -> None:
    assert [Field(k).describe() for k in (int, float, str, bool, dict)] == \
        ["an integer", "a number", "a string", "true or false", "a mapping"]
    assert Field(("list", float)).describe() == "a list of numbers"
    assert Field(("list", str)).describe() == "a list of strings"
    assert Field(str).default is REQUIRED


def test_one_of() -> None:
    check = one_of("none", "7x7", 3)
    assert [check(v) for v in ("none", "7x7", 3)] == [None, None, None]
    assert check("5x5") == "'5x5' is not one of: none, 7x7, 3"
    assert check(None) == "None is not one of: none, 7x7, 3"


def test_positive() -> None:
    assert positive(1) is None and positive(1e-9) is None and positive([1, 2.5]) is None and positive([]) is None
    assert positive(0) == "must be > 0, got 0"
    assert positive(-0.5) == "must be > 0, got -0.5"
    assert positive([1, 0, 2]) == "every value must be > 0, got [1, 0, 2]"


def test_check_runs_on_the_normalised_value() -> None:
    seen = []
    validate({"x": 3}, {"x": Field(float, check=lambda v: seen.append(v))}, "f")
    assert seen == [3.0] and type(seen[0]) is float
