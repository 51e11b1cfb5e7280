"""`sbrrepro collect`: every row of a study -> results (results.json, and one line per row and seed
as CSV and Parquet), one table per table plan (terminal, Markdown, LaTeX) and every figure plan's
figure.

A row's runs are its seeds: ours is their mean (± their std), judged against the published number;
its verdict (`verdicts`) also says whether the runs were made as the paper made them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import figures, jobs, study_files
from .configs import mask_sizes_by
from .costs import measured
from .datasets import BUILT_IN
from .errors import UserError
from .export import write_rows
from .files import atomic_write
from .layout import sizes_key
from .metrics import PARAM_UNITS, VOCABULARY, from_coco, from_params, sized_by
from .params import Counts, param_metrics
from .plan import Plan, Row, load_plan
from .render import to_latex, to_markdown
from .results import lacks_sizes, recorded_coco, training_footprint
from .rows import CITED, DERIVED, TRAINED, RowConfig, trained
from .speed import recorded as recorded_speed
from .study import Study
from .table import Table, TableRow
from .verdicts import Judged, Verdict, verdict
from .verify import compare, mean_std
from .zoo import MODELS
from .zoo import _frameworks as eras


def other_data(study: Study) -> bool:
    return study.dataset not in BUILT_IN


def ours(study: Study, rc: RowConfig) -> dict[str, float]:
    """Our metrics for a finished run: CocoMetric's output in its training's log, or for an
    evaluation-only row, in what its evaluation job kept of `runner.test()`; the training's memory
    and checkpoint size; the speed `sbrrepro speed` measured."""
    run, training = study.paths.run(rc.key), study.paths.run(rc.train_key)
    if run.server_stats.exists():  # scored by the evaluation server
        coco = study_files.read(run.server_stats, {str: study_files.Number(-1, 1)},
                                "the evaluation server's stats as `import-stats` stored them",
                                "delete it and run `sbrrepro import-stats` again")
    else:
        coco = recorded_coco(run, rc.eval_only)
        sized = study.paths.run(sizes_key(rc.key))
        if lacks_sizes(coco) and sized.done.exists():  # finished before both conventions: evaluated again
            coco = {**coco, **{k: v for k, v in recorded_coco(sized, True).items() if k.endswith("area")}}
    out = {**from_coco(coco or {}), **training_footprint(training)}
    if (speed := recorded_speed(study.paths).get(rc.key)) is not None:
        out.update(speed_fps=speed["images_per_s"], test_time_s=1 / speed["images_per_s"],
                   test_mem_GB=speed["peak_memory_GB"])
    return out


@dataclass(frozen=True)
class Run:
    """One training (one seed) of a row, and what it left."""

    state: jobs.RowState
    metrics: dict[str, float]
    provenance: dict[str, Any] | None
    trained: tuple[int, str] | None  # how long it trained: (epochs, 'epoch') or (iterations, 'iter')


@dataclass(frozen=True)
class RowResult:
    """One plan row: its runs (one per seed), ours, the cells against the published numbers, the
    verdict and how its runs differ from the paper's setup (FOOTNOTES keys)."""

    plan: Plan
    row: Row
    kind: str  # one of sbrrepro.rows.KINDS
    runs: list[Run]
    metrics: list[dict[str, float]]  # per finished seed (one entry for a counted or derived row)
    table_row: TableRow
    differences: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        return self.table_row.verdict

    def to_json(self) -> dict[str, Any]:
        """A line of results.json: the row (its first seed's state), ours (the mean), the published
        numbers, Δ, the verdict, and each seed's own."""
        cells = self.table_row.cells
        about = self.runs[0].state.to_json() if self.runs else {
            "plan": self.plan.name, "row": self.row.number, "label": self.row.label, "state": self.kind, **self.extra}
        return {**about, "metrics": _mean(self.metrics),
                "std": {m: c.std for m, c in cells.items() if c.std is not None},
                "published": {m: c.published for m, c in cells.items()},
                "diff": {m: c.diff for m, c in cells.items()}, "verdict": self.verdict.word,
                "symbol": self.verdict.symbol, "differences": list(self.differences),
                "provenance": self.runs[0].provenance if self.runs else None,
                "seeds": [{"seed": r.state.seed, "key": r.state.key, "state": r.state.state, "metrics": r.metrics}
                          for r in self.runs]}


def _run(study: Study, state: jobs.RowState, rc: RowConfig, sizes_by: str) -> Run:
    """`sizes_by`: the paper's convention for the mask AP_S/M/L ('box' or 'mask' area)."""
    training = study.paths.run(rc.train_key)
    prov = study_files.provenance(training.provenance) if training.provenance.exists() else None
    metrics = sized_by(ours(study, rc), sizes_by) if state.state == jobs.DONE else {}
    return Run(state, metrics, prov, training.final_step())


def differences(study: Study, row: Row, runs: list[Run]) -> tuple[str, ...]:
    """How the finished runs of a row were made otherwise than the paper says (FOOTNOTES keys)."""
    done = [r for r in runs if r.trained is not None]
    if not done:
        return ()
    length = (row.recipe["iters"], "iter") if row.recipe["iters"] else (row.recipe["epochs"], "epoch")
    gpus = row.recipe["nodes"] * row.recipe["gpus_per_node"]
    found = {"batch": any(r.provenance and (r.provenance["lr_scaled"] or r.provenance["processes"] != gpus)
                          for r in done),
             "schedule": any(_paper_length(r) != length for r in done),
             "framework": any(built_with(r)[1] != paper_settings(row) for r in done if r.provenance),
             "dataset": other_data(study), "smoke": study.scale == "smoke"}
    return tuple(k for k, v in found.items() if v)


def paper_settings(row: Row) -> tuple[str, ...]:
    """The settings of the MMDetection the row's paper used that its model takes (`zoo._frameworks`)."""
    return eras.settings(MODELS[row.model].era_settings, row.recipe.get("framework"))


def built_with(run: Run) -> tuple[str | None, tuple[str, ...]]:
    """(era, settings) a run's config was built with, as its provenance recorded them (none: 3.3's)."""
    return eras.recorded((run.provenance or {}).get(eras.MARKER))


def _paper_length(run: Run) -> tuple[int, str]:
    """How long a finished run trained, in the paper's total batch: an iteration schedule scaled at
    job start to another total batch (`training.scale_schedule`) saw the paper's images."""
    steps, unit = run.trained
    prov = run.provenance or {}
    if prov.get("schedule", {}).get("scaled"):
        steps = round(steps * prov["batch"] / prov["paper_batch"])
    return steps, unit


def _mean(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Every metric that a run has, as the mean over the runs that have it."""
    keys = dict.fromkeys(k for m in per_seed for k in m)
    return {k: mean_std([m[k] for m in per_seed if k in m])[0] for k in keys}


def plan_results(study: Study, plan: Plan, configs: dict[int, list[RowConfig]],
                 state_of: dict[tuple[str, int, int], jobs.RowState], counts: Counts) -> list[RowResult]:
    """Every row of one plan, in its order (a derived line after the rows it is computed from)."""
    made: dict[int, tuple[str, list[Run], list[dict[str, float]], tuple[str, ...], tuple[str, ...]]] = {}
    for row in plan.rows:
        kind, runs, per_seed, states, marks = row.kind, [], [{}], (), ()
        if kind == TRAINED:
            runs = [_run(study, state_of[(rc.plan, rc.row, rc.seed)], rc, mask_sizes_by(row.recipe))
                    for rc in configs[row.number]]
            per_seed, states = [r.metrics for r in runs], tuple(r.state.state for r in runs)
            marks = differences(study, row, runs)
        elif kind == DERIVED:
            a, b = (_mean(made[n][2]) for n in row.derived)
            per_seed = [{m: round(a[m] - b[m], 6) for m in plan.metrics if m in a and m in b}]
            states = tuple(s for n in row.derived for s in made[n][3])
            marks = tuple(dict.fromkeys(m for n in row.derived for m in made[n][4]))
        if param_metrics(plan) and row.model is not None:  # counted on the paper-scale model, at any scale
            per_seed = [m | from_params(counts(row), plan.metrics) for m in per_seed]
        made[row.number] = (kind, runs, [m for m in per_seed if m], states, marks)

    out = []
    for row in plan.rows:
        kind, runs, per_seed, states, marks = made[row.number]
        published = plan.published[row.number]
        if plan.baseline is not None:  # your own study: every row against its baseline row
            published = {m: str(v) for m, v in _mean(made[plan.baseline][2]).items()}
        cells, judgement = compare(per_seed, published, plan.metrics, plan.tolerance)
        judged = Judged(kind, states, judgement, plan.has_published, marks, counted_only(plan))
        lead = [str(row.number), *(plan.published[row.number][k] for k in plan_lead(plan))]
        if not plan_lead(plan):  # no published table: the rows' own labels
            lead.append(row.label)
        shown = marks if per_seed and not counted_only(plan) else ()
        extra = {"cited": row.cited} if kind == CITED else {"derived": list(row.derived)} if kind == DERIVED else {}
        table_row = TableRow(lead, cells, verdict(judged), shown, kind not in (CITED, DERIVED))
        out.append(RowResult(plan, row, kind, runs, per_seed, table_row, marks, extra))
    return out


def table_of(plan: Plan, results: list[RowResult], scale: str, dataset: str) -> Table:
    notes = []
    settings = eras.table_note([(r.number, r.recipe.get("framework"), paper_settings(r)) for r in plan.rows
                                if r.kind == TRAINED])
    if settings:
        notes.append(settings)
    for row in plan.rows:
        if row.cited is not None:
            notes.append(f"Row {row.number}: cited ({row.cited}), not reproduced: the paper's number only.")
        elif row.derived:
            notes.append(f"Row {row.number}: row {row.derived[0]} − row {row.derived[1]}, ours computed from ours.")
    return Table(f"{plan.paper} {plan.name.split('/')[1]}: {plan.title}", caption(plan, scale),
                 ["#", *(plan_lead(plan) or ["row"])], plan.metrics, [r.table_row for r in results], dataset,
                 "Paper" if plan.baseline is None else f"Row {plan.baseline}", notes)


@dataclass(frozen=True)
class Collected:
    results: Path
    reports: list[Path]
    rows: list[dict[str, Any]]
    tables: dict[str, Table]  # plan name -> its table (table plans only)
    figures: list[Path]
    not_drawn: dict[str, str]  # figure plan -> why its figure could not be drawn yet
    by_plan: dict[str, list[RowResult]] = field(default_factory=dict)  # plan name -> its rows' results
    plans: dict[str, Plan] = field(default_factory=dict)  # plan name -> plan


T = TypeVar("T")


def one_per_row(rows: list[tuple[T, RowConfig]]) -> list[tuple[T, RowConfig]]:
    """The first seed of every row: what a figure of one run per row draws."""
    return list({(rc.plan, rc.row): (p, rc) for p, rc in reversed(rows)}.values())[::-1]


def collect(study: Study) -> Collected:
    registered = study.rows()
    plans: dict[str, Plan] = {}
    for plan_path, _ in registered:
        if plan_path not in plans:
            plans[plan_path] = load_plan(plan_path)
    state_of = {(s.plan, s.row, s.seed): s for s in jobs.states(study, trained(registered))}
    counts = Counts(study.paths.params)

    by_plan: dict[str, list[RowResult]] = {}
    for plan_path, plan in plans.items():
        configs: dict[int, list[RowConfig]] = {}
        for p, rc in registered:
            if p == plan_path:
                configs.setdefault(rc.row, []).append(rc)
        by_plan[plan_path] = plan_results(study, plan, configs, state_of, counts)
    rows = [r.to_json() for results in by_plan.values() for r in results]

    costs = {rc.train_key: h for _, rc in registered if (h := measured(study.paths.run(rc.train_key))) is not None}
    atomic_write(study.paths.costs, json.dumps(costs, indent=1))
    atomic_write(study.paths.results, json.dumps({"scale": study.scale, "rows": rows}, indent=1))
    write_rows([r for results in by_plan.values() for r in results], study.paths)
    reports, tables, drawn, not_drawn = [], {}, [], {}
    for plan_path, plan in plans.items():
        if plan.figure:
            try:
                rows_of_plan = one_per_row([(plan, rc) for p, rc in registered if p == plan_path])
                drawn += figures.kind(plan.figure).draw(study.paths, rows_of_plan, study.paths.figure(plan.name))
            except UserError as e:  # e.g. a training that has not recorded anything yet
                not_drawn[plan.name] = str(e)
        if plan.figure or not plan.metrics:  # a figure plan's numbers are its figure's
            continue
        table = table_of(plan, by_plan[plan_path], study.scale, study.dataset)
        for suffix, render in ((".md", to_markdown), (".tex", to_latex)):
            path = study.paths.report(plan.name, suffix)
            atomic_write(path, render(table))
            reports.append(path)
        tables[plan.name] = table
    return Collected(study.paths.results, reports, rows, tables, drawn, not_drawn,
                     {plans[p].name: r for p, r in by_plan.items()}, {p.name: p for p in plans.values()})


def plan_lead(plan: Plan) -> list[str]:
    """The published table's descriptive columns (every CSV column that is not a metric)."""
    first = next(iter(plan.published.values()), {})
    return [k for k in first if k not in VOCABULARY]


def counted_only(plan: Plan) -> bool:
    """Whether every number of the plan's table is counted on the paper-scale model (no training),
    so that it compares with the paper at any scale."""
    return bool(plan.metrics) and set(plan.metrics) <= PARAM_UNITS.keys()


def caption(plan: Plan, scale: str) -> str:
    if plan.baseline is not None:
        text = f"Ours: computed by sbrrepro; Row {plan.baseline}: the baseline row's; Δ = Ours − Row {plan.baseline}."
    elif not plan.has_published:
        text = "Ours: computed by sbrrepro (nothing published to compare with)."
    else:
        text = (f"Paper: as published; Ours: computed by sbrrepro (mean ± std where a row ran several seeds); "
                f"Δ = Ours − Paper; ✓ reproduced when every |Δ| ≤ {plan.tolerance:g} and the run's setup is the "
                "paper's.")
    text += " Best of our column in bold, second underlined."
    if counted_only(plan):
        return text + " Counted on the paper-scale model, without training, whatever the study's scale."
    if scale == "smoke":
        text += " Smoke scale: no verdict against the paper."
    return text
