"""A small declarative schema for YAML mappings: each field's type, default and an optional check.

Used by plans, recipes, model options and cluster profiles, so every bad value is reported the same
way: the file, the dotted field and what would be right.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UserError

REQUIRED = object()

# Readable names for the types the schema accepts.
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}


@dataclass(frozen=True)
class Field:
    kind: type | tuple[str, type]  # a scalar type, or ("list", item type)
    default: Any = REQUIRED
    check: Callable[[Any], str | None] | None = None  # returns what is wrong, or None
    help: str = ""

    def describe(self) -> str:
        if isinstance(self.kind, tuple):
            return f"a list of {_TYPE_NAMES[self.kind[1]].split(' ', 1)[1]}s"
        return _TYPE_NAMES[self.kind]


def _is(value: Any, kind: type) -> bool:
    if kind is float:  # an integer is a fine number; a boolean is not
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _float(value: int | float, where: str, path: str) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise UserError(where, path, f"a number of {len(str(abs(value)))} digits is beyond any float") from None


def validate(data: Any, fields: Mapping[str, Field], where: str, prefix: str = "") -> dict[str, Any]:
    """Check `data` against `fields`; return it with defaults filled in and numbers normalised."""
    if not isinstance(data, Mapping):
        raise UserError(where, prefix.rstrip(".") or None, f"expected a mapping, got {type(data).__name__}")
    # YAML keys may be numbers, booleans (`on:`, `yes:`) or null: no field has such a name
    odd = [key for key in data if not isinstance(key, str)]
    if odd:
        raise UserError(where, prefix.rstrip(".") or None, f"field names are strings, got {odd[0]!r} "
                        f"({type(odd[0]).__name__})")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(
            where, prefix + str(unknown[0]), f"unknown field; the known fields are: {', '.join(fields)}"
        )
    out: dict[str, Any] = {}
    for name, spec in fields.items():
        path = prefix + name
        if name not in data:
            if spec.default is REQUIRED:
                raise UserError(where, path, f"missing; expected {spec.describe()}" + _help(spec))
            out[name] = spec.default
            continue
        value = data[name]
        if isinstance(spec.kind, tuple):
            item = spec.kind[1]
            if not isinstance(value, list) or not all(_is(v, item) for v in value):
                raise UserError(where, path, f"expected {spec.describe()}, got {value!r}" + _help(spec))
            value = [_float(v, where, path) if item is float else v for v in value]
        else:
            if not _is(value, spec.kind):
                raise UserError(where, path, f"expected {spec.describe()}, got {value!r}" + _help(spec))
            if spec.kind is float:
                value = _float(value, where, path)
        if spec.check is not None and (problem := spec.check(value)):
            raise UserError(where, path, problem)
        out[name] = value
    return out


def _help(spec: Field) -> str:
    return f" ({spec.help})" if spec.help else ""


def one_of(*choices: Any) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"{v!r} is not one of: {', '.join(map(str, choices))}"


def positive(v: Any) -> str | None:
    if isinstance(v, list):
        return None if all(x > 0 for x in v) else f"every value must be > 0, got {v}"
    return None if v > 0 else f"must be > 0, got {v}"
