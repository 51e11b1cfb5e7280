"""`sbrrepro collect`: every row of a study -> results.json and one table per plan (MD, LaTeX)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import jobs
from .configs import RowConfig
from .costs import COSTS_FILE, measured
from .files import atomic_write
from .metrics import PARAM_UNITS, VOCABULARY, from_coco, from_params
from .params import Counts, param_metrics
from .plan import Plan, load_plan
from .report import Table, to_latex, to_markdown
from .results import final_metrics, training_footprint
from .speed import recorded as recorded_speed
from .study import Study
from .training import DONE_FILE, PROVENANCE_FILE
from .verify import compare
from .zoo import MODELS

SCALED_MARK = "†"
PARAMS_FILE = "params.json"  # counts by model and options, kept by collect


def ours(study: Study, rc: RowConfig) -> dict[str, float]:
    """Our metrics for a finished row: CocoMetric's output in its training's log, or for an
    evaluation-only row, in what its evaluation job kept of `runner.test()`; the training's memory
    and checkpoint size; the speed `sbrrepro speed` measured."""
    run_dir = study.run_dir(rc.key)
    done = json.loads((run_dir / DONE_FILE).read_text())
    coco = done["metrics"] if rc.eval_only else final_metrics(run_dir, done["epochs"])
    train_dir = study.run_dir(rc.train_key)
    epochs = json.loads((train_dir / DONE_FILE).read_text())["epochs"]
    out = {**from_coco(coco or {}), **training_footprint(train_dir, epochs)}
    if (speed := recorded_speed(study.root).get(rc.key)) is not None:
        out["speed_fps"] = speed["images_per_s"]
    return out


@dataclass(frozen=True)
class Collected:
    results: Path
    reports: list[Path]
    rows: list[dict[str, Any]]
    tables: list[Table]
    figures: list[str]  # plans of figures (no metrics), which collect renders no table for


def collect(study: Study) -> Collected:
    registered = study.rows()
    plans: dict[str, Plan] = {}
    for plan_path, _ in registered:
        if plan_path not in plans:
            plans[plan_path] = load_plan(plan_path)
    trained = [rc for _, rc in registered if MODELS[rc.model].trains]
    state_of = {(s.plan, s.row): s for s in jobs.states(study, trained)}
    counts = Counts(study.root / PARAMS_FILE)

    rows, by_plan = [], {}
    for plan_path, rc in registered:
        plan = plans[plan_path]
        state = state_of.get((rc.plan, rc.row))
        metrics = ours(study, rc) if state and state.state == jobs.DONE else {}
        if param_metrics(plan):  # counted on the paper-scale model, whatever the study's scale
            row = next(r for r in plan.rows if r.number == rc.row)
            metrics |= from_params(counts(row), plan.metrics)
        published = plan.published[rc.row]
        cells, verdict = compare(metrics, published, plan.metrics, plan.tolerance)
        if study.scale == "smoke" and verdict != "–" and not counted_only(plan):
            verdict = "smoke"  # synthetic data: the numbers are real but not comparable with the paper
        prov_path = study.run_dir(rc.train_key) / PROVENANCE_FILE
        prov = json.loads(prov_path.read_text()) if prov_path.exists() else None
        about = state.to_json() if state else {"plan": rc.plan, "row": rc.row, "label": rc.label,
                                               "state": "counted"}
        rows.append({**about, "metrics": metrics,
                     "published": {m: cells[m].published for m in plan.metrics},
                     "diff": {m: cells[m].diff for m in plan.metrics}, "verdict": verdict, "provenance": prov})
        lead = [str(rc.row), *(published[k] for k in plan_lead(plan))]
        mark = SCALED_MARK if prov and prov["lr_scaled"] else ""
        by_plan.setdefault(plan_path, []).append((lead, cells, verdict + mark))

    costs = {rc.train_key: h for _, rc in registered if (h := measured(study.run_dir(rc.train_key))) is not None}
    atomic_write(study.root / COSTS_FILE, json.dumps(costs, indent=1))
    results = study.root / "results.json"
    atomic_write(results, json.dumps({"scale": study.scale, "rows": rows}, indent=1))
    reports, tables, figures = [], [], []
    for plan_path, table_rows in by_plan.items():
        plan = plans[plan_path]
        if not plan.metrics:
            figures.append(plan.name)  # a figure, drawn by its own command: no table
            continue
        table = Table(f"{plan.paper} {plan.name.split('/')[1]}: {plan.title}", caption(plan, study.scale),
                      ["#", *plan_lead(plan)], plan.metrics, table_rows)
        base = study.root / "report" / plan.name.replace("/", "-")
        atomic_write(base.with_suffix(".md"), to_markdown(table))
        atomic_write(base.with_suffix(".tex"), to_latex(table))
        reports += [base.with_suffix(".md"), base.with_suffix(".tex")]
        tables.append(table)
    return Collected(results, reports, rows, tables, figures)


def plan_lead(plan: Plan) -> list[str]:
    """The published table's descriptive columns (every CSV column that is not a metric)."""
    first = next(iter(plan.published.values()))
    return [k for k in first if k not in VOCABULARY]


def counted_only(plan: Plan) -> bool:
    """Whether every number of the plan's table is counted on the paper-scale model (no training),
    so that it compares with the paper at any scale."""
    return bool(plan.metrics) and set(plan.metrics) <= PARAM_UNITS.keys()


def caption(plan: Plan, scale: str) -> str:
    text = (f"Paper: as published; Ours: computed by sbrrepro; Δ = Ours − Paper. "
            f"✓ when every |Δ| ≤ {plan.tolerance:g}.")
    if counted_only(plan):
        return text + " Counted on the paper-scale model, without training, whatever the study's scale."
    text += (f" {SCALED_MARK} trained with another total batch than the paper's (other GPU count), "
             "lr scaled linearly.")
    if scale == "smoke":
        text += (" Smoke scale: trained and evaluated on sbrrepro's small synthetic dataset with ResNet-18, "
                 "so Ours is not comparable with the paper (no verdict).")
    return text
