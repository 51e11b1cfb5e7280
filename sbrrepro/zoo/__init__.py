"""The models a plan row may name: one `Model` object each, declared in this package's modules (one
per paper, plus `stock` for MMDetection's own baselines). Plain data and plain dicts only: building
a config imports neither torch nor the plugins.

A new paper adds one module here that defines `MODELS: list[Model]`; nothing else lists models.
A model of a user's own lives outside the source tree: an installed package's module with the same
`MODELS`, named by an entry point of the group `sbrrepro.zoo` (its plugins: `sbrrepro.models`).
Everything that generic code needs to know of a model is one of its hooks: the configs stage, the
plan loader and the parameter counts call them without knowing which model they hold.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import UserError
from ..rows import COUNTED, TRAINED
from ..schema import Field

# Re-exported: what the GPU-hour estimates rest on; MMDetection's shipped configs as dicts, which a
# user's own zoo module builds from too (`stock` is the module of MMDetection's models).
from ._parts import COST_BASIS, hours_per_epoch  # noqa: F401
from ._parts import stock as shipped  # noqa: F401

ENTRY_POINTS = "sbrrepro.zoo"  # the group of installed packages' zoo modules

Options = dict[str, Any]
# A smoke-scale narrowing of a model's own modules: (the config's `model`, the neck's and heads' width).
Narrowing = Callable[[dict, int], None]


def _same(o: Options) -> Options:
    return o


@dataclass(frozen=True)
class Model:
    name: str  # as plans name it
    title: str  # as figures name it (matplotlib mathtext)
    description: str
    # Validated options -> the model's MMDetection config at the paper's scale, as a plain dict
    # (`model`, data pipelines, schedule of the stock config it starts from).
    build: Callable[[Options], dict]
    options: dict[str, Field] = field(default_factory=dict)
    # Cross-field check and completion of defaults that depend on other options.
    finish: Callable[[Options], Options | str] = _same
    # The options of the training a row needs: its test-time-only options set as that training
    # evaluates itself. Rows that differ only in those share one training (evaluation-only rows).
    training: Callable[[Options], Options] = _same
    # Full-scale GPU-hours per epoch before anything was measured; None: unknown until measured.
    gpu_hours_per_epoch: Callable[[Options], float | None] = lambda o: None
    # Legend labels of the IoU series its training records (series name -> label), for figures.
    iou_series: Callable[[Options], dict[str, str]] = lambda o: {}
    trains: bool = True  # False: nothing to train or evaluate (counted or computed from annotations)
    # The backbone it builds, as recipes name it: a plan's recipe must name the same (None: any).
    backbone: Callable[[Options], str | None] = lambda o: "resnet50_fpn"
    # Every name it may stand for in a recipe (what `backbone` answers, what `own_schedule` sets): the
    # zoo's are what a recipe's backbone may be.
    backbones: tuple[str, ...] = ("resnet50_fpn",)
    # At smoke scale, once MMDetection's standard keys are narrowed: its own modules narrowed, in order.
    smoke: tuple[Narrowing, ...] = ()
    # Module types whose classes are the semantic maps' labels; every other head takes the dataset's.
    semantic_heads: tuple[str, ...] = ()
    # The built model (a torch module) -> what of it the paper counts the trainable parameters of.
    counted: Callable[[Any, Options], Any] = lambda module, o: module
    # A plan row's `base` (an MMDetection config: mmdet::<path>, or a file relative to the plan's
    # folder) -> this model's options, or what is wrong with it; None: rows do not start from configs.
    from_base: Callable[[str, Path], Options | str] | None = None
    # Its built config -> the recipe its own schedule amounts to (a row of a plan without a recipe
    # trains on it), or why it has none; None: it trains on the plan's recipe only.
    own_schedule: Callable[[dict], dict[str, Any] | str] | None = None
    # The model settings of an older MMDetection that it takes where its paper's numbers came from that
    # one (a recipe's `framework`): names of `_frameworks.SETTINGS`; () for none (its shipped config kept
    # them, or its authors' config does not have them).
    era_settings: tuple[str, ...] = ()


def _modules() -> Iterator[tuple[str, ModuleType]]:
    """(where, module) of every zoo module: this package's, then the installed packages'."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield f"{__name__}.{info.name}", importlib.import_module(f"{__name__}.{info.name}")
    for point in sorted(entry_points(group=ENTRY_POINTS), key=lambda p: p.name):
        where = f"entry point {point.name} = {point.value} (group {ENTRY_POINTS})"
        try:
            yield where, point.load()
        except Exception as e:  # a user's package: one clear line, not its traceback
            raise UserError(where, None, f"cannot be imported: {type(e).__name__}: {e}") from None


def _discover() -> dict[str, Model]:
    found: dict[str, tuple[str, Model]] = {}
    for where, module in _modules():
        if not isinstance(getattr(module, "MODELS", None), list):
            raise UserError(where, "MODELS", "a zoo module defines MODELS, a list of sbrrepro.zoo.Model")
        for model in module.MODELS:
            if model.name in found:
                raise UserError(where, "MODELS", f"model {model.name!r} is declared by {found[model.name][0]} too")
            found[model.name] = (where, model)
    return {name: model for name, (_, model) in found.items()}


MODELS: dict[str, Model] = _discover()


def kind(name: str) -> str:
    """What a plan row of model `name` is (see sbrrepro.rows): trained, or counted where it has nothing
    to train or evaluate."""
    return TRAINED if MODELS[name].trains else COUNTED
BACKBONES: tuple[str, ...] = tuple(dict.fromkeys(b for m in MODELS.values() for b in m.backbones))


def based(base: str, folder: Path) -> tuple[str, Options] | str:
    """A plan row's `base` -> the model that starts from a config and its options on that one, or
    what is wrong with it (see `Model.from_base`)."""
    model = next(m for m in MODELS.values() if m.from_base is not None)
    options = model.from_base(base, folder)
    return options if isinstance(options, str) else (model.name, options)
