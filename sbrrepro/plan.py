"""Stage 1: a YAML plan (one paper table) -> a validated `Plan` (plain data).

A plan names the paper and table, the metrics the table reports, the training recipe of the paper,
the published numbers (a CSV in tables/) and its rows: a model with its options, and optionally a
row-level change of the recipe (for instance a 36-epoch schedule).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .figures import KINDS
from .metrics import VOCABULARY
from .reader import INPUT_BYTES, read_text, read_yaml
from .rows import CITED, DERIVED, TRAINED
from .schema import Field, one_of, positive, validate
from .vocabulary import FRAMEWORKS
from .zoo import BACKBONES, MODELS, based, kind
from .zoo._parts import config_node

MAIN_PAPER = "sbr-cnn"  # the paper sbrrepro is named after: `plans/table5.yaml` is its Table 5
RECIPE_FILE = "recipe.yaml"  # a paper's recipe, beside its plans: `plans/<paper>/*.yaml` names it too
PLANS = Path(__file__).resolve().parents[1] / "plans"  # the repository's plans, beside the package


def papers() -> list[str]:
    """The papers sbrrepro reproduces: the repository's plan folders that hold a paper's recipe (the
    others, such as plans/examples, are studies of their own)."""
    return sorted(recipe.parent.name for recipe in PLANS.glob(f"*/{RECIPE_FILE}"))


def locate(path: str | Path) -> Path:
    """A plan's file: `path` where it exists, else the main paper's plan of that name where `path`
    is a file directly in a plans folder (`plans/table5.yaml` -> `plans/sbr-cnn/table5.yaml`)."""
    path = Path(path)
    main = path.parent / MAIN_PAPER / path.name
    if not path.exists() and path.absolute().parent.name == "plans" and main.is_file():
        return main
    return path


def load_plans(paths: Sequence[str | Path]) -> list[Plan]:
    """The plans among `paths` (a paper's recipe file, which a glob of its folder names, is left
    out), each checked before any is used."""
    plans = [load_plan(p) for p in paths if Path(p).name != RECIPE_FILE]
    if not plans:
        raise UserError("command line", "plans", f"no plan among {', '.join(map(str, paths))} (only recipes)")
    return plans


def _metrics_check(v: list[str]) -> str | None:
    bad = [m for m in v if m not in VOCABULARY]
    return f"unknown metric {bad[0]!r}; known: {', '.join(VOCABULARY)}" if bad else None


def _name(v: str) -> str | None:
    """A table's name ends up in file names: no path or shell characters."""
    ok = v and all(c.isalnum() or c in "_-" for c in v)
    return None if ok else f"{v!r}: use letters, digits, '_' and '-' only (e.g. '3' or 'fig3')"


def _seeds(v: list[int]) -> str | None:
    if not v or len(set(v)) != len(v) or any(s < 0 for s in v):
        return f"expected distinct seeds >= 0, at least one, e.g. [0, 1, 2]; got {v}"
    return None


def _pair(v: list[int]) -> str | None:
    return None if len(v) == 2 and all(x > 0 for x in v) else f"expected [long edge, short edge], got {v}"


OPTIMIZER_FIELDS = {
    "type": Field(str, "SGD", one_of("SGD")),
    "lr": Field(float, check=positive),
    "momentum": Field(float, 0.9),
    "weight_decay": Field(float, 1e-4),
}
RECIPE_FIELDS = {
    "dataset": Field(str, check=one_of("coco2017"), help="the paper's dataset"),
    "train_split": Field(str, "train2017"),
    "eval_split": Field(str, "val2017", help="val2017 is COCO minival; test-dev2017's annotations are withheld: its "
                        "rows write detections for COCO's evaluation server and wait for its stats "
                        "(`sbrrepro import-stats`)"),
    "backbone": Field(str, check=one_of(*BACKBONES), help="the paper's backbone; each row's model must build it"),
    "epochs": Field(int, check=positive, help="the schedule's length in epochs (with `iters`: its equivalent, "
                    "for cost estimates and scaled-down runs)"),
    "iters": Field(int, 0, lambda v: None if v >= 0 else f"must be >= 0, got {v}",
                   "> 0: an iteration schedule of that many iterations; lr_steps are then iterations too"),
    "lr_steps": Field(("list", int), check=positive, help="epochs (or iterations) at which the lr drops tenfold"),
    "warmup_iters": Field(int, 500),
    "warmup_ratio": Field(float, 0.001, positive, "the linear warm-up's first lr, as a fraction of lr"),
    "clip_grad": Field(float, 0.0, lambda v: None if v >= 0 else f"must be >= 0, got {v}",
                       "gradient clipping: largest L2 norm; 0: none"),
    "roi_sampling_ratio": Field(int, None, None, "RoIAlign points per bin in every extractor (default: the model's)"),
    "curves": Field(bool, False, None, "validate after every epoch at every scale, for AP-per-epoch figures"),
    "optimizer": Field(dict),
    "images_per_gpu": Field(int, check=positive),
    "nodes": Field(int, check=positive),
    "gpus_per_node": Field(int, check=positive),
    "image_scale": Field(("list", int), check=_pair),
    "val_interval": Field(int, 1, positive, "validate every N epochs"),
    "seed": Field(int, 0, help="MMEngine's random seed"),
    "test_score_thr": Field(float, None, None, "the R-CNN head's test-time score threshold (default: the model's)"),
    "keep_checkpoints": Field(int, 1, positive, "full scale: the checkpoints a training keeps on disk, the last "
                              "ones (MMDetection's default keeps every epoch's); the last resumes a requeued job"),
    "framework": Field(str, None, one_of(*FRAMEWORKS), "the MMDetection the paper's numbers came from: each row's "
                       "model takes that era's settings that 3.3 changed, as far as its model takes them "
                       "(`run --framework` builds another's); default: the installed one's (3.3)"),
    "mask_sizes_by": Field(str, None, one_of("box", "mask"), "what sized a detection for the paper's mask "
                           "AP_S/M/L where the recipe names no `framework` (whose convention decides: mmdet-1.x "
                           "and mmdet-2.8 box, mmdet-3.3 mask): `box` (MMDetection up to 2.11 kept a mask "
                           "result's box) or `mask` (2.12 on); both are kept in results.json, the tables show "
                           "this one; default: mask"),
}
PLAN_FIELDS = {
    "paper": Field(str, check=lambda v: _name(v) and f"{v!r}: use letters, digits, '_' and '-' only (one of "
                   f"{', '.join(papers())}, or your own study's name)"),
    "table": Field(str, check=_name, help="the table's or figure's name in the paper, e.g. '3' or 'fig3'"),
    "title": Field(str),
    "metrics": Field(("list", str), check=_metrics_check),
    "figure": Field(str, None, one_of(*KINDS), "a figure plan: the kind of figure its rows make"),
    "tolerance": Field(float, 0.5, positive, "largest |ours - published| for a match, in points"),
    "published": Field(str, None, help="CSV of published numbers, relative to the plan file (none: your own "
                       "study, whose table shows ours)"),
    "baseline": Field(int, None, positive, "the row whose numbers every row's delta is taken against (a plan "
                      "without published numbers)"),
    "recipe_file": Field(str, None, help="a YAML file with the paper's recipe, relative to the plan file"),
    "recipe": Field(dict, {}, help="the paper's training recipe, or changes to recipe_file's"),
    "seeds": Field(("list", int), None, _seeds, "train every row once per seed (MMEngine's random "
                   "seed), e.g. [0, 1, 2]: ours is then their mean ± std; default: the recipe's one seed"),
    "rows": Field(("list", dict)),
}
ROW_FIELDS = {
    "row": Field(int, check=positive, help="the paper's row number"),
    "model": Field(str, None, one_of(*MODELS), "what the row trains; a row without one is cited or derived"),
    "base": Field(str, None, help="instead of a model: any MMDetection config, mmdet::<path in MMDetection's "
                  "configs> (e.g. mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py) or a config file relative to "
                  "the plan"),
    "cited": Field(str, None, help="a result another paper published, for a model sbrrepro cannot build: the "
                   "reference; no job, the published numbers shown as cited, no verdict"),
    "derived": Field(("list", int), None, lambda v: None if len(v) == 2 else f"expected [row a, row b], got {v}",
                     "[a, b]: a line computed as row a minus row b of this plan (e.g. an overall improvement)"),
    "label": Field(str, None),
    "seeds": Field(("list", int), None, _seeds, "this row's seeds, instead of the plan's"),
    "options": Field(dict, {}),
    "recipe": Field(dict, {}, help="changes to the plan's recipe for this row"),
    "note": Field(str, None, help="why our number may differ from the published one"),
    "cfg": Field(dict, {}, help="dotted changes of the model's config, e.g. {model.roi_head.bbox_head.loss_bbox."
                 "loss_weight: 2.0}, applied before the recipe and the scale; each key must exist"),
}


@dataclass(frozen=True)
class Row:
    number: int
    model: str | None  # None: the row runs nothing (it is cited or derived)
    label: str
    options: dict[str, Any]
    recipe: dict[str, Any]
    note: str | None = None
    cited: str | None = None  # the reference of a result another paper published
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted config keys -> values
    own_schedule: bool = False  # a `base` config's schedule and optimizer stand (the plan has no recipe)
    derived: tuple[int, int] | None = None  # (a, b): row a minus row b
    seeds: tuple[int, ...] = ()  # a model row's trainings, one per seed (ours: their mean); () for the others
    kind: str = TRAINED  # what the row is (see sbrrepro.rows), decided here once

    def seeded(self, seed: int) -> Row:
        """The row trained with `seed`: its recipe's seed replaced."""
        return dataclasses.replace(self, recipe={**self.recipe, "seed": seed})


@dataclass(frozen=True)
class Plan:
    path: Path
    paper: str
    table: str
    title: str
    metrics: list[str]
    tolerance: float
    published: dict[int, dict[str, str]]  # paper row -> column -> cell, as printed ({} cells: none published)
    rows: list[Row]
    figure: str | None = None  # a figure plan's kind (a module of sbrrepro.figures)
    baseline: int | None = None  # own studies: the row the others' deltas are against

    def row(self, number: int) -> Row:
        """The row with the paper's row number `number`."""
        return next(r for r in self.rows if r.number == number)

    @property
    def has_published(self) -> bool:
        """Whether the paper published numbers for this table (a study of your own has none)."""
        return any(self.published.values())

    @property
    def model_rows(self) -> list[Row]:
        """The rows that name a model (not those cited or derived)."""
        return [r for r in self.rows if r.model is not None]

    @property
    def unrun_rows(self) -> list[Row]:
        """The rows that run nothing: cited results and derived lines."""
        return [r for r in self.rows if r.model is None]

    def with_seeds(self, count: int) -> Plan:
        """The plan with every trained row on seeds 0 .. count - 1 (`--seeds N`)."""
        rows = [dataclasses.replace(r, seeds=tuple(range(count))) if r.kind == TRAINED else r for r in self.rows]
        return dataclasses.replace(self, rows=rows)

    @property
    def name(self) -> str:
        """Stable identifier: the paper and table, e.g. 'sbr-cnn/table3'."""
        table = self.table if not self.table[0].isdigit() else f"table{self.table}"
        return f"{self.paper}/{table}"


def _recipe(data: dict, where: str, prefix: str) -> dict[str, Any]:
    recipe = validate(data, RECIPE_FIELDS, where, prefix)
    recipe["optimizer"] = validate(recipe["optimizer"], OPTIMIZER_FIELDS, where, prefix + "optimizer.")
    length, unit = (recipe["iters"], "iterations") if recipe["iters"] else (recipe["epochs"], "epochs")
    if any(s > length for s in recipe["lr_steps"]):
        raise UserError(where, prefix + "lr_steps", f"steps {recipe['lr_steps']} beyond {length} {unit}")
    return recipe


def load_published(path: Path, where: str) -> dict[int, dict[str, str]]:
    try:
        rows = list(table := csv.DictReader(io.StringIO(read_text(path, INPUT_BYTES, "a CSV of published numbers"),
                                                         newline="")))
    except OSError as e:
        raise UserError(where, "published", f"cannot read {path}: {e.strerror}") from None
    except csv.Error as e:  # e.g. a cell over the csv module's field limit
        raise UserError(str(path), None, f"not a valid CSV: {e}") from None
    if not rows or "row" not in rows[0]:
        raise UserError(str(path), "row", "the CSV needs a header with a 'row' column and one line per row")
    out: dict[int, dict[str, str]] = {}
    for i, line in enumerate(rows, start=2):
        if None in line or None in line.values():  # DictReader's marks of more or fewer cells than the header's
            raise UserError(f"{path}:{i}", None, f"expected {len(table.fieldnames or ())} cells, one per column "
                            "of the header")
        if not line["row"].isdecimal() or len(line["row"]) > 9:  # what int() takes: not '²', not 4,300 digits
            raise UserError(f"{path}:{i}", "row", f"expected the paper's row number, got {line['row']!r}")
        out[int(line["row"])] = {k: v.strip() for k, v in line.items() if k != "row"}
    return out


def _load_yaml(path: Path, where: str, field: str | None) -> Any:
    """Safe YAML (see `reader`); the OS's errors name `where` (the plan) and its `field` that pointed at `path`."""
    try:
        return read_yaml(path, what="a YAML plan" if field is None else "a YAML recipe")
    except OSError as e:
        folder = path.absolute().parent
        if field is None and isinstance(e, FileNotFoundError) and folder.name == "plans" and folder.is_dir():
            # a path of the old flat layout, plans/<name>.yaml: the plan is plans/<paper>/<name>.yaml now
            papers = [d.name for d in sorted(folder.iterdir()) if (d / path.name).is_file()]
            if papers:
                moved = " or ".join(str(path.parent / paper / path.name) for paper in papers)
                raise UserError(where, None, f"plans are per paper now: use {moved}") from None
        what = "the plan" if field is None else str(path)
        raise UserError(where, field, f"cannot read {what}: {e.strerror}") from None


def _based(r: dict[str, Any], plan_dir: Path, where: str, prefix: str) -> dict[str, Any]:
    """A row with `base`: the zoo's model that starts from a config, on that config."""
    base = r.pop("base")
    if base is None:
        return r
    if r["model"] is not None or r["options"]:
        raise UserError(where, prefix + "base", "a row starts from a zoo model (model, options) or from a config "
                        "(base), not both")
    found = based(base, plan_dir)
    if isinstance(found, str):
        raise UserError(where, prefix + "base", found)
    model, options = found
    return {**r, "model": model, "options": options}


def _row(r: dict[str, Any], recipe: dict[str, Any], label: str, seeds: list[int] | None, where: str,
         prefix: str) -> Row:
    """A validated row: a model with its options and recipe, or a cited or derived line."""
    kinds = [k for k in ("model", "cited", "derived") if r[k] is not None]
    if len(kinds) != 1:
        problem = f"has {' and '.join(kinds)}" if kinds else "has none"
        raise UserError(where, prefix.rstrip("."), f"{problem}: a row has exactly one of model (a training), cited "
                        "(another paper's result) or derived (row a minus row b)")
    if r["model"] is None:
        extra = [k for k in ("options", "recipe", "cfg", "seeds") if r[k]]
        if extra:
            raise UserError(where, prefix + extra[0], f"a {kinds[0]} row runs nothing: it takes no {extra[0]}")
        return Row(r["row"], None, label, {}, {}, r["note"], cited=r["cited"], derived=r["derived"] and
                   tuple(r["derived"]), kind=CITED if r["cited"] is not None else DERIVED)
    spec = MODELS[r["model"]]
    options = validate(r["options"], spec.options, where, prefix + "options.")
    finished = spec.finish(options)
    if isinstance(finished, str):
        raise UserError(where, prefix + "options", finished)
    own_schedule = not recipe
    if own_schedule and spec.own_schedule is None:
        raise UserError(where, prefix + "model", "a plan without a recipe runs `base` configs on their own "
                        "schedule; a zoo model needs the plan's recipe (recipe or recipe_file)")
    if own_schedule and r["recipe"]:
        raise UserError(where, prefix + "recipe", "a `base` config in a plan without a recipe trains on its own "
                        "schedule: give the plan a recipe to change it")
    built = spec.build(finished) if own_schedule or r["cfg"] else None  # once, for the checks that read it
    if own_schedule:
        recipe = spec.own_schedule(built)
        if isinstance(recipe, str):
            raise UserError(where, prefix + "base", recipe)
    row_recipe = _recipe({**recipe, **r["recipe"]}, where, prefix + "recipe.")
    if (backbone := spec.backbone(finished)) not in (None, row_recipe["backbone"]):
        raise UserError(where, prefix + "recipe.backbone", f"the recipe says {row_recipe['backbone']}, but "
                        f"{r['model']} with these options builds {backbone}")
    if r["cfg"]:
        _check_overrides(built, r["cfg"], where, prefix + "cfg.")
    trained = kind(r["model"]) == TRAINED
    return Row(r["row"], r["model"], label, finished, row_recipe, r["note"], overrides=dict(r["cfg"]), own_schedule=
               own_schedule, seeds=tuple(r["seeds"] or seeds or [row_recipe["seed"]]) if trained else
               (row_recipe["seed"],), kind=kind(r["model"]))


def _check_overrides(cfg: dict, overrides: dict[str, Any], where: str, prefix: str) -> None:
    for dotted in overrides:
        if config_node(cfg, dotted) is None:
            raise UserError(where, prefix + dotted, "no such key in the model's config (keys are dotted paths from "
                            "the config's top, e.g. model.roi_head.bbox_head.loss_bbox.loss_weight; list items "
                            "by index)")


def _check_derived(rows: list[Row], where: str) -> None:
    """A derived line subtracts two rows of its plan that train models."""
    trained = {r.number for r in rows if r.model is not None}
    for i, row in enumerate(rows):
        missing = [n for n in row.derived or () if n not in trained]
        if missing:
            raise UserError(where, f"rows[{i}].derived", f"row {missing[0]} is not a row of this plan with a "
                            f"model; rows with one: {', '.join(map(str, sorted(trained)))}")


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    where = str(path)
    data = _load_yaml(path, where, None)
    if isinstance(data, dict) and isinstance(data.get("table"), int):
        data["table"] = str(data["table"])
    top = validate(data, PLAN_FIELDS, where)
    if top["recipe_file"]:
        recipe_path = path.parent / top["recipe_file"]
        recipe = _load_yaml(recipe_path, where, "recipe_file")
        if not isinstance(recipe, dict):  # e.g. an empty file: null
            raise UserError(str(recipe_path), None, f"expected a mapping of the recipe's fields, got "
                            f"{type(recipe).__name__}")
        top["recipe"] = {**recipe, **top["recipe"]}
    if top["recipe"]:  # none: every row is a `base` config on its own schedule
        _recipe(top["recipe"], where, "recipe.")  # a bad plan-level recipe is reported at its own field
    if top["published"] is None:  # your own study: no published numbers
        # a row number that is no integer (maybe unhashable: a list) is left to the row's validation below
        published = {r["row"]: {} for r in top["rows"] if isinstance(r, dict) and isinstance(r.get("row"), int)}
    else:
        published = load_published((path.parent / top["published"]).resolve(), where)
    missing_cols = [m for m in top["metrics"] if top["published"] and m not in next(iter(published.values()))]
    if missing_cols:
        raise UserError(where, "metrics", f"{missing_cols[0]!r} is not a column of {top['published']}")

    rows: list[Row] = []
    for i, raw in enumerate(top["rows"]):
        prefix = f"rows[{i}]."
        r = _based(validate(raw, ROW_FIELDS, where, prefix), path.parent, where, prefix)
        if any(r["row"] == other.number for other in rows):
            raise UserError(where, prefix + "row", f"row {r['row']} appears twice")
        if r["row"] not in published:
            raise UserError(where, prefix + "row", f"row {r['row']} has no line in {top['published']}")
        cells = published[r["row"]]
        label = r["label"] or next((cells[k] for k in ("model", "method", "name") if cells.get(k)), r["model"]) or ""
        rows.append(_row(r, top["recipe"], label, top["seeds"], where, prefix))
    _check_derived(rows, where)
    if top["baseline"] is not None and top["baseline"] not in {r.number for r in rows if r.model is not None}:
        raise UserError(where, "baseline", f"row {top['baseline']} is not a row of this plan with a model")
    if top["baseline"] is not None and top["published"] is not None:
        raise UserError(where, "baseline", "a plan compares with its published numbers or with a baseline row, "
                        "not both: drop `published` or `baseline`")
    return Plan(path, top["paper"], top["table"], top["title"], top["metrics"], top["tolerance"], published, rows,
                top["figure"], top["baseline"])
