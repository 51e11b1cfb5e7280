"""The JSON files a study keeps, read where they are used through `read`: the reader's bounds
(`reader.read_json`), then the file's shape checked once, so that a file edited by hand, cut short, of
another version or with a folder in its place is one `UserError` (the file, what in it is wrong, what
sbrrepro expects there and what to do) rather than an exception further on.

A shape is written as the JSON it describes:

    str, bool, None         a string, true or false, null
    Number(lo, hi)          a finite number from lo to hi; with integer=True, an integer
    Text(pattern, noun)     a string the regular expression matches whole
    "smoke"                 that string
    (A, B)                  an A or a B
    [A, ...]                a list of As; [A, B]: a list of an A and a B
    {str: A}                an object, each value an A
    {"f": A, "g?": B}       an object with field f (and maybe g) as said; other fields are let be

Imports only the standard library, `reader` and `vocabulary` (as `layout` does): jobs on compute nodes read their files
through it too.
"""

from __future__ import annotations

import re
import reprlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .reader import STUDY_BYTES, read_json
from .vocabulary import FRAMEWORK_KEY

_MAX = sys.float_info.max


@dataclass(frozen=True)
class Number:
    lo: float = -_MAX  # the default bounds keep out NaN, the infinities and integers no float holds
    hi: float = _MAX
    integer: bool = False

    def holds(self, x: Any) -> bool:
        return (type(x) is int or type(x) is float and not self.integer) and self.lo <= x <= self.hi

    def __str__(self) -> str:
        bounds = [f"at least {self.lo:g}"] * (self.lo > -_MAX) + [f"at most {self.hi:g}"] * (self.hi < _MAX)
        return ", ".join(["an integer" if self.integer else "a finite number", *bounds])


@dataclass(frozen=True)
class Text:
    pattern: str
    noun: str

    def holds(self, x: Any) -> bool:
        return type(x) is str and re.fullmatch(self.pattern, x) is not None

    def __str__(self) -> str:
        return self.noun


NUMBER = Number()
TIME = Number(0, 1e11)  # a Unix time (1e11: the year 5138)
INT64 = Number(-2**63, 2**63 - 1, integer=True)  # what SQLite's INTEGER holds
# A run's key, <model>-<hash> (configs.keyed_config): a name a folder may have, with "-sizes" added (255 bytes)
# and an evaluation of both mask size conventions' key (`layout.sizes_key`: <model>-<hash>-sizes)
KEY = Text(r"[A-Za-z0-9_.+-]{1,180}-[0-9a-f]{1,64}(-sizes)?", "a run key (<model>-<hash>)")

_show = reprlib.Repr()
_show.maxstring = _show.maxother = 60


def _describe(shape: Any) -> str:
    if isinstance(shape, tuple):
        return " or ".join(map(_describe, shape))
    if isinstance(shape, list):
        return "a list" if shape[-1:] == [...] else f"a list of {len(shape)} items"
    if isinstance(shape, dict):
        return "an object"
    return {str: "a string", bool: "true or false", None: "null"}.get(shape) or (
        repr(shape) if isinstance(shape, str) else str(shape))


def problem(x: Any, shape: Any, at: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str] | None:
    """Where `x` first differs from `shape` (the keys and indexes that lead there) and how; None: it
    does not. Of alternatives, the one that matched deepest is said."""
    kind = type(shape)
    if kind is Number or kind is Text:  # the most frequent first: this runs on every value of a file
        holds = shape.holds(x)
    elif kind is dict:
        if type(x) is not dict:
            return at, f"is {_show.repr(x)}, not {_describe(shape)}"
        if str in shape:
            values = shape[str]
            return next((w for k, v in x.items() if (w := problem(v, values, (*at, k)))), None)
        for name, s in shape.items():
            field = name.removesuffix("?")
            if field in x:
                if wrong := problem(x[field], s, (*at, field)):
                    return wrong
            elif field == name:
                return (*at, field), "is missing"
        return None
    elif kind is list:
        if type(x) is not list:
            return at, f"is {_show.repr(x)}, not {_describe(shape)}"
        items = shape[:1] * len(x) if shape[-1:] == [...] else shape
        if len(x) != len(items):
            return at, f"has {len(x)} items, not {len(items)}"
        return next((w for i, (v, s) in enumerate(zip(x, items)) if (w := problem(v, s, (*at, i)))), None)
    elif kind is tuple:
        found = []
        for alternative in shape:
            if (wrong := problem(x, alternative, at)) is None:
                return None
            found.append(wrong)
        deepest = max(found, key=lambda w: len(w[0]))
        return deepest if len(deepest[0]) > len(at) else (at, f"is {_show.repr(x)}, not {_describe(shape)}")
    else:
        holds = x is None if shape is None else type(x) is shape if shape in (str, bool) else x == shape
    return None if holds else (at, f"is {_show.repr(x)}, not {_describe(shape)}")


def _field(at: tuple[Any, ...]) -> str | None:
    """The keys and indexes to a value, for a message of one line."""
    return ".".join(k if isinstance(k, str) and k.isascii() and k.isprintable() and len(k) <= 60
                    else _show.repr(k) for k in at) or None


def unreadable(path: Path, error: OSError, fix: str) -> UserError:
    """A study's file that the OS would not read (a folder in its place, no permission)."""
    return UserError(str(path), None, f"cannot be read ({error.strerror or error}); {fix}")


def read(path: Path, shape: Any, what: str, fix: str) -> Any:
    """The JSON of the study's file `path`, of `shape`; else one UserError saying what is wrong, that
    sbrrepro expects `what` there, and `fix`: what to do."""
    try:
        data = read_json(path, STUDY_BYTES, what)
    except OSError as e:
        raise unreadable(path, e, fix) from None
    except UserError as e:
        raise UserError(e.where, e.field, f"{e.message}; {fix}") from None
    if wrong := problem(data, shape):
        at, how = wrong
        raise UserError(str(path), _field(at), f"{how}; expected {what}; {fix}")
    return data


# --- the files a run's jobs write, read by several modules ---------------------------------------------------------
_METRICS = {str: NUMBER}  # CocoMetric's output
_DONE = {"finished": TIME, "metrics?": _METRICS}
_STEPS = Number(0, 1e9, integer=True)
TRAINED = ({**_DONE, "epochs": _STEPS}, {**_DONE, "iters": _STEPS})  # a training's: how long it trained
EVALUATED = {**_DONE, "metrics": _METRICS}  # an evaluation's


def done(path: Path, shape: Any = _DONE) -> dict[str, Any]:
    """A finished run's done.json, which its job writes last; `shape`: TRAINED or EVALUATED where
    the caller needs what that kind of run writes."""
    return read(path, shape, 'the summary its job wrote on finishing: {"finished": a Unix time, "epochs" or "iters": '
                "how long a training trained, \"metrics\": {name: number}}",
                "delete it, and the run counts as failed: `sbrrepro run PLAN --retry-failed` runs it again (a "
                "training resumes from its last checkpoint)")


_BATCH = Number(1, 1e9, integer=True)
_PROVENANCE = {"started": TIME, "processes": Number(1, 1e6, integer=True), "gpus": Number(0, 1e6, integer=True),
               "device": str, "batch": _BATCH, "paper_batch?": _BATCH, "lr_effective": NUMBER, "lr_scaled": bool,
               "versions": {str: (str, None)}, "schedule?": {"scaled?": bool},
               f"{FRAMEWORK_KEY}?": (None, {"era?": (str, None), "settings?": [str, ...]})}


def provenance(path: Path) -> dict[str, Any]:
    """What a run's job recorded of its setup on starting (training.provenance); the fields sbrrepro
    reads of it are checked."""
    return read(path, _PROVENANCE, "what the run's job recorded of its setup on starting: started, processes, gpus, "
                "device, batch, lr_effective, lr_scaled, versions",
                "delete it: the run's setup and GPU-hours are then unknown, nothing else")
