"""Stage 2's files: each plan row's config built once and written into the study.

`build` makes every row's config in memory (or finds it already written, through the study's config
cache), so that the data check and the weights staging read the configs before anything is written;
`write` then puts them on disk with the local weights they load, and returns one `RowConfig` per row
and seed: the record the later stages receive.
"""

from __future__ import annotations

import dataclasses
import json
import pprint
from dataclasses import dataclass
from pathlib import Path

from .config_cache import ConfigCache, digest
from .configs import SERVER_SPLITS, Scale, keyed_config
from .files import atomic_write
from .layout import StudyPaths
from .plan import Plan, Row
from .rows import RowConfig
from .weights import placed as with_weights
from .zoo import MODELS


def config_text(cfg: dict) -> str:
    """A Python config file that MMEngine's Config.fromfile reads back: one assignment per top-level
    field, laid out by pprint (mmengine's own pretty_text runs a formatter that costs a second a row)."""
    return "".join(f"{name} = {pprint.pformat(value, width=110, sort_dicts=False)}\n" for name, value in cfg.items())


def training_row(row: Row) -> Row:
    """The training a row needs: its test-time-only options set as that training evaluates itself,
    and validated on the split its tables share where the row's split is scored by the server."""
    recipe = {**row.recipe, "eval_split": SERVER_SPLITS.get(row.recipe["eval_split"], row.recipe["eval_split"])}
    return dataclasses.replace(row, options=MODELS[row.model].training(row.options), recipe=recipe)


@dataclass(frozen=True)
class Built:
    """One config of a row: `what` is '' (the row's) or '-train' (the training an evaluation-only row
    needs). `cfg` is the config without its local weights; None where the cache found it written."""

    plan: Plan
    index: int  # the row's place in its plan's rows, as errors name it (rows[i])
    row: Row  # with its seed
    what: str
    inputs: str | None  # the cache's digest of what it is built from
    key: str
    path: Path
    cfg: dict | None


@dataclass(frozen=True)
class RowBuilt:
    """A row and seed: its own config and that of the training it needs (the same one where they agree)."""

    own: Built
    training: Built

    def record(self) -> RowConfig:
        row = self.own.row
        return RowConfig(self.own.plan.name, row.number, row.model, row.label, self.own.path, self.own.key,
                         self.training.path, self.training.key, row.recipe["seed"], row.kind)


def _one(plan: Plan, index: int, row: Row, what: str, scale: Scale, paths: StudyPaths, cache: ConfigCache,
         configs: bool) -> Built:
    inputs = cache.inputs(plan.name, row, scale, what)

    def path_of(key: str) -> Path:
        return paths.config(plan.name, row.number, what, key.rsplit("-", 1)[1])

    if not configs and (found := cache.lookup(inputs, path_of)) is not None:
        return Built(plan, index, row, what, inputs, found[1], found[0], None)
    key, cfg = keyed_config(row, scale)
    return Built(plan, index, row, what, inputs, key, path_of(key), cfg)


def build(plans: list[Plan], scale: Scale, paths: StudyPaths, cache: ConfigCache, configs: bool) -> list[RowBuilt]:
    """Every row with a model of `plans`, once per seed (identical content, identical key), with the
    training an evaluation-only row needs. With `configs` each config is built, to be read before it
    is written; without, one the cache finds written from the same inputs is not built at all."""
    out = []
    for plan in plans:
        for index, unseeded in enumerate(plan.rows):
            for row in (unseeded.seeded(seed) for seed in unseeded.seeds if unseeded.model is not None):
                own = _one(plan, index, row, "", scale, paths, cache, configs)
                training = training_row(row)
                trained = own if training == row else _one(plan, index, training, "-train", scale, paths, cache,
                                                           configs)
                out.append(RowBuilt(own, own if trained.key == own.key else trained))
    return out


def write(built: list[RowBuilt], scale: Scale, cache: ConfigCache, weights: dict[str, Path] | None = None) -> None:
    """Write each built config (each file once), loading `weights` (checkpoint reference -> local
    file, see `weights.stage`) instead of downloading at job start; the caller saves the cache."""
    done: set[Path] = set()
    for b in (b for rb in built for b in {rb.own.path: rb.own, rb.training.path: rb.training}.values()):
        if b.cfg is None or b.path in done:
            continue
        done.add(b.path)
        inputs = b.inputs
        if inputs is not None and weights:  # their paths are in the text: a config whose weights moved is rewritten
            inputs = digest(inputs + json.dumps(sorted((url, str(p)) for url, p in weights.items())))
        if cache.lookup(inputs, lambda key, path=b.path: path) is not None:
            continue
        cfg = with_weights(b.cfg, weights) if weights else b.cfg
        label = " ".join(b.row.label.split())  # one comment line: a line break in a plan's label would start code
        header = f"# {b.plan.name} row {b.row.number}{b.what}: {label} ({scale.name} scale), generated by sbrrepro\n"
        text = header + config_text(cfg)
        if not b.path.exists() or b.path.read_text() != text:  # another study folder or data root: other paths
            atomic_write(b.path, text)
        cache.remember(inputs, b.key, text)


def write_configs(plan: Plan, scale: Scale, paths: StudyPaths, cache: ConfigCache | None = None) -> list[RowConfig]:
    """Build and write the config of each row of `plan` with a model (see `build`): its records."""
    cache = cache or ConfigCache(None)
    built = build([plan], scale, paths, cache, configs=False)
    write(built, scale, cache)
    return [rb.record() for rb in built]
