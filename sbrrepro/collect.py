"""`sbrrepro collect`: every row of a study -> results.json, one table per table plan (MD, LaTeX)
and every figure plan's figure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import figures, jobs
from .configs import RowConfig
from .costs import measured
from .errors import UserError
from .files import atomic_write
from .metrics import PARAM_UNITS, VOCABULARY, from_coco, from_params
from .params import Counts, param_metrics
from .plan import Plan, Row, load_plan
from .profiles import BUILT_IN
from .report import Table, to_latex, to_markdown
from .results import final_metrics, training_footprint
from .speed import recorded as recorded_speed
from .study import Study
from .verify import compare
from .zoo import MODELS

SCALED_MARK = "†"
CITED = "cited"  # the verdict of a cited row: another paper's published numbers, not reproduced
OTHER_DATA = "other data"  # trained on a dataset of the user's, not the paper's: never reproduced
OWN = "own"  # a row of your own study: nothing published to compare with


def other_data(study: Study) -> bool:
    return study.dataset not in BUILT_IN


def _about(plan: Plan, row: Row, rc: RowConfig | None, state: jobs.RowState | None) -> dict[str, Any]:
    """A row's identity and state in results.json."""
    if state is not None:
        return state.to_json()
    about = {"plan": plan.name, "row": row.number, "label": row.label}
    if row.cited is not None:
        return {**about, "state": "cited", "cited": row.cited}
    if row.derived:
        return {**about, "state": "derived", "derived": list(row.derived)}
    return {**about, "state": "counted"}


def ours(study: Study, rc: RowConfig) -> dict[str, float]:
    """Our metrics for a finished row: CocoMetric's output in its training's log, or for an
    evaluation-only row, in what its evaluation job kept of `runner.test()`; the training's memory
    and checkpoint size; the speed `sbrrepro speed` measured."""
    run, training = study.paths.run(rc.key), study.paths.run(rc.train_key)
    if run.server_stats.exists():  # scored by the evaluation server
        coco = json.loads(run.server_stats.read_text())
    else:
        coco = json.loads(run.done.read_text())["metrics"] if rc.eval_only else final_metrics(run, run.final_step()[0])
    out = {**from_coco(coco or {}), **training_footprint(training)}
    if (speed := recorded_speed(study.paths).get(rc.key)) is not None:
        out.update(speed_fps=speed["images_per_s"], test_time_s=1 / speed["images_per_s"],
                   test_mem_GB=speed["peak_memory_GB"])
    return out


@dataclass(frozen=True)
class Collected:
    results: Path
    reports: list[Path]
    rows: list[dict[str, Any]]
    tables: list[Table]
    figures: list[Path]
    not_drawn: dict[str, str]  # figure plan -> why its figure could not be drawn yet


def collect(study: Study) -> Collected:
    registered = study.rows()
    plans: dict[str, Plan] = {}
    for plan_path, _ in registered:
        if plan_path not in plans:
            plans[plan_path] = load_plan(plan_path)
    trained = [rc for _, rc in registered if MODELS[rc.model].trains]
    state_of = {(s.plan, s.row): s for s in jobs.states(study, trained)}
    counts = Counts(study.paths.params)

    rows, by_plan = [], {}
    for plan_path, plan in plans.items():
        configs = {rc.row: rc for p, rc in registered if p == plan_path}
        metrics_of: dict[int, dict[str, float]] = {}
        for row in plan.rows:  # a derived line follows the rows it is computed from
            state = state_of.get((plan.name, row.number))
            if row.derived:
                a, b = (metrics_of.get(n, {}) for n in row.derived)
                metrics = {m: round(a[m] - b[m], 6) for m in plan.metrics if m in a and m in b}
            else:
                metrics = ours(study, configs[row.number]) if state and state.state == jobs.DONE else {}
            if param_metrics(plan) and row.model is not None:  # counted on the paper-scale model, at any scale
                metrics |= from_params(counts(row), plan.metrics)
            metrics_of[row.number] = metrics
        for row in plan.rows:
            rc, state, metrics = configs.get(row.number), state_of.get((plan.name, row.number)), metrics_of[row.number]
            published = plan.published[row.number]
            if plan.baseline is not None:  # your own study: every row against its baseline row
                published = {m: str(v) for m, v in metrics_of[plan.baseline].items()}
            cells, verdict = compare(metrics, published, plan.metrics, plan.tolerance)
            if not any(plan.published.values()):
                verdict = OWN  # nothing published to reproduce
            elif row.cited is not None:
                verdict = CITED  # another paper's result: nothing of ours to judge
            elif study.scale == "smoke" and verdict != "–" and not counted_only(plan):
                verdict = "smoke"  # synthetic data: the numbers are real but not comparable with the paper
            elif other_data(study) and verdict != "–" and not counted_only(plan):
                verdict = OTHER_DATA  # the user's dataset: real numbers, not the paper's experiment
            prov_path = study.paths.run(rc.train_key).provenance if rc else None
            prov = json.loads(prov_path.read_text()) if prov_path and prov_path.exists() else None
            rows.append({**_about(plan, row, rc, state), "metrics": metrics,
                         "published": {m: cells[m].published for m in plan.metrics},
                         "diff": {m: cells[m].diff for m in plan.metrics}, "verdict": verdict, "provenance": prov})
            lead = [str(row.number), *(plan.published[row.number][k] for k in plan_lead(plan))]
            if not plan_lead(plan):  # no published table: the rows' own labels
                lead.append(row.label)
            mark = SCALED_MARK if prov and prov["lr_scaled"] else ""
            by_plan.setdefault(plan_path, []).append((lead, cells, verdict + mark))

    costs = {rc.train_key: h for _, rc in registered if (h := measured(study.paths.run(rc.train_key))) is not None}
    atomic_write(study.paths.costs, json.dumps(costs, indent=1))
    atomic_write(study.paths.results, json.dumps({"scale": study.scale, "rows": rows}, indent=1))
    reports, tables, drawn, not_drawn = [], [], [], {}
    for plan_path, plan in plans.items():
        if plan.figure:
            try:
                rows_of_plan = [(p, rc) for p, rc in registered if p == plan_path]
                drawn += figures.kind(plan.figure).draw(study.paths, rows_of_plan, study.paths.figure(plan.name))
            except UserError as e:  # e.g. a training that has not recorded anything yet
                not_drawn[plan.name] = str(e)
        if plan.figure or not plan.metrics:  # a figure plan's numbers are its figure's
            continue
        table = Table(f"{plan.paper} {plan.name.split('/')[1]}: {plan.title}",
                      caption(plan, study.scale, study.dataset), ["#", *(plan_lead(plan) or ["row"])], plan.metrics,
                      by_plan[plan_path], "Paper" if plan.baseline is None else f"Row {plan.baseline}")
        for suffix, render in ((".md", to_markdown), (".tex", to_latex)):
            path = study.paths.report(plan.name, suffix)
            atomic_write(path, render(table))
            reports.append(path)
        tables.append(table)
    return Collected(study.paths.results, reports, rows, tables, drawn, not_drawn)


def plan_lead(plan: Plan) -> list[str]:
    """The published table's descriptive columns (every CSV column that is not a metric)."""
    first = next(iter(plan.published.values()), {})
    return [k for k in first if k not in VOCABULARY]


def counted_only(plan: Plan) -> bool:
    """Whether every number of the plan's table is counted on the paper-scale model (no training),
    so that it compares with the paper at any scale."""
    return bool(plan.metrics) and set(plan.metrics) <= PARAM_UNITS.keys()


def caption(plan: Plan, scale: str, dataset: str = "coco2017") -> str:
    if plan.baseline is not None:
        text = f"Ours: computed by sbrrepro; Row {plan.baseline}: the baseline row's; Δ = Ours − Row {plan.baseline}."
    elif not any(plan.published.values()):
        text = "Ours: computed by sbrrepro (nothing published to compare with)."
    else:
        text = (f"Paper: as published; Ours: computed by sbrrepro; Δ = Ours − Paper. "
                f"✓ when every |Δ| ≤ {plan.tolerance:g}.")
    if counted_only(plan):
        return text + " Counted on the paper-scale model, without training, whatever the study's scale."
    text += (f" {SCALED_MARK} trained with another total batch than the paper's (other GPU count), "
             "lr scaled linearly.")
    for row in plan.rows:
        if row.cited is not None:
            text += f" Row {row.number}: {CITED} ({row.cited}), not reproduced: the paper's number only."
        elif row.derived:
            text += f" Row {row.number}: row {row.derived[0]} − row {row.derived[1]}, ours computed from ours."
    if dataset not in BUILT_IN:
        text += f" Trained and evaluated on {dataset}, not the paper's dataset: no verdict."
    if scale == "smoke":
        text += (" Smoke scale: trained and evaluated on sbrrepro's small synthetic dataset with ResNet-18, "
                 "so Ours is not comparable with the paper (no verdict).")
    return text
