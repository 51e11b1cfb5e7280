"""`sbrrepro report`: what `collect` gathered -> one page per paper of the study, as a self-contained
HTML file (styles inline, images embedded: it opens offline and travels as one file) and as Markdown.

Each page: a summary (rows reproduced of rows run; hours spent and still to spend, over every training
of the paper's plans, figure plans' included, by the state `status` shows), every table in
the paper's layout, every figure (the figure plans' and each table's training curves), each row's
setup against the paper's, what each row changes against its table's baseline row (config keys),
what is still running or failed (the end of its log), and the cited rows.
"""

from __future__ import annotations

import ast
import base64
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import figures, jobs, preflight
from .collect import Collected, RowResult, Run, built_with, one_per_row, paper_settings
from .costs import estimate
from .errors import UserError
from .files import atomic_write
from .render import HTML, to_markdown
from .rows import CITED, DERIVED, TRAINED, trained
from .study import Study
from .table import Table
from .verdicts import FAILED, NOT_REPRODUCED, OTHER_SETUP, REPRODUCED, RUNNING, VERDICTS
from .zoo import _frameworks as eras

LOG_LINES = 12  # of a running or failed job's log, on its page
DIFF_KEYS = 25  # config keys shown per row against its baseline row
JUDGED = (REPRODUCED, OTHER_SETUP, NOT_REPRODUCED)  # rows that ran and were judged against the paper


# ---- plain data: what a page shows ---------------------------------------------------------------
def flat_config(path: Path) -> dict[str, Any]:
    """A generated config (one Python literal per top-level name) as dotted keys -> values."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, (list, tuple)) and any(isinstance(v, dict) for v in node):
            for i, v in enumerate(node):
                walk(f"{prefix}.{i}", v)
        else:
            out[prefix] = node

    for statement in ast.parse(path.read_text()).body:
        if isinstance(statement, ast.Assign):
            walk(statement.targets[0].id, ast.literal_eval(statement.value))
    return out


def config_diff(row: Path, baseline: Path) -> list[tuple[str, Any, Any]]:
    """(key, the baseline's value, the row's) for every key that differs, a missing key None; the
    modules' types first, as they say the most."""
    a, b = flat_config(baseline), flat_config(row)
    keys = sorted(a.keys() | b.keys(), key=lambda k: (not k.endswith(".type"), k))
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]


def setup(result: RowResult) -> dict[str, str]:
    """A trained row's setup, ours against the paper's recipe."""
    recipe = result.row.recipe
    gpus = recipe["nodes"] * recipe["gpus_per_node"]
    length = f"{recipe['iters']} it" if recipe["iters"] else f"{recipe['epochs']} ep"
    paper = {"GPUs": str(gpus), "batch": str(gpus * recipe["images_per_gpu"]), "lr": f"{recipe['optimizer']['lr']:g}",
             "schedule": length, "seeds": "1",
             "framework": eras.describe(recipe.get("framework"), paper_settings(result.row))}
    runs = [r for r in result.runs if r.provenance]
    if not runs:
        return {k: f"– / {v}" for k, v in paper.items()}
    p = runs[0].provenance
    trained = runs[0].trained
    ours = {"GPUs": f"{p['gpus']} ({p['device']}, {p['processes']} process{'es' if p['processes'] > 1 else ''})",
            "batch": str(p["batch"]), "lr": f"{p['lr_effective']:g}",
            "schedule": "–" if trained is None else f"{trained[0]} {'ep' if trained[1] == 'epoch' else 'it'}",
            "seeds": f"{len(result.runs)} ({', '.join(str(r.state.seed) for r in result.runs)})",
            "framework": eras.describe(*built_with(runs[0]))}
    out = {k: f"{ours[k]} / {paper[k]}" for k in paper}
    versions = p["versions"]
    out["versions"] = ", ".join(f"{n} {versions.get(n)}" for n in ("mmdet", "mmcv", "mmengine", "torch"))
    out["commit"] = p.get("sbrrepro_commit") or "unknown"
    return out


def _log_end(path: str | None) -> str | None:
    if not path or not Path(path).exists():
        return None
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-LOG_LINES:])


@dataclass(frozen=True)
class Page:
    """One paper's page, as plain data."""

    paper: str
    summary: dict[str, Any]
    tables: list[tuple[str, Table]]  # (plan name, its table)
    figures: list[tuple[str, Path]]  # (caption, PNG)
    setups: list[tuple[str, dict[str, str]]]  # ("plan row N: label", setup)
    changes: list[tuple[str, str, list[tuple[str, Any, Any]]]]  # (row, against which row, diff)
    unfinished: list[tuple[str, str, str | None]]  # (row, state, end of its log)
    cited: list[tuple[str, str]]  # (row, reference)
    preflight: list[tuple[str, str]]  # (the rows of a training, its preflight's finding)


def _name(r: RowResult) -> str:
    return f"{r.plan.name} row {r.row.number}: {r.row.label}"


def _baseline(results: list[RowResult]) -> RowResult | None:
    """The row a table's other rows are compared with: an own study's baseline, else its first trained row."""
    trained = [r for r in results if r.kind == TRAINED]
    if not trained:
        return None
    wanted = trained[0].plan.baseline
    return next((r for r in trained if r.row.number == wanted), trained[0])


def training_states(runs: list[Run]) -> dict[str, str]:
    """Each training's state as `status` shows it (`jobs.states`): its own row's; a training that only
    evaluation-only rows need (it has no row of its own) is done once it wrote done.json, else in
    the state of the row that waits for it."""
    own = {run.state.key: run.state.state for run in runs}
    return {run.state.train_key: own.get(run.state.train_key, jobs.DONE if run.trained is not None else run.state.state)
            for run in runs}


def page(study: Study, collected: Collected, paper: str) -> Page:
    names = [n for n, p in collected.plans.items() if p.paper == paper]
    results = [r for n in names if not collected.plans[n].figure for r in collected.by_plan[n]]
    count = Counter(r.verdict for r in results)
    ran = [r for r in results if r.kind in (TRAINED, DERIVED) and r.metrics and r.verdict not in (RUNNING, FAILED)]
    registered = [(p, rc) for p, rc in study.rows() if rc.plan in names]
    hours = estimate([(collected.plans[rc.plan].row(rc.row), rc) for rc in trained(registered)],
                     study.paths, study.scale)
    # every training of the paper's plans, figure plans' included: spent once done, else still to spend
    states = training_states([run for n in names for r in collected.by_plan[n] for run in r.runs])
    todo = {k: h for k, h in hours.items() if states[k] != jobs.DONE}
    spent = sum(h for k, h in hours.items() if k not in todo and h is not None)
    summary = {"rows": len(results), "run": len(ran), "judged": sum(count[v] for v in JUDGED),
               "reproduced": count[REPRODUCED],
               "verdicts": {v.word: count[v] for v in VERDICTS if count[v]},
               "unit": "GPU-hours" if study.scale == "full" else "process-hours", "spent": spent,
               "to_spend": None if None in todo.values() else sum(todo.values()), "trainings_to_run": len(todo),
               "not_finished": dict(sorted(Counter(states[k] for k in todo).items())),
               "scale": study.scale, "dataset": study.dataset}

    tables, pictures, setups, changes, unfinished, cited = [], [], [], [], [], []
    for name in names:
        plan, rows = collected.plans[name], collected.by_plan[name]
        unfinished += [(f"{_name(r)} (seed {run.state.seed})", run.state.state,
                        run.state.log_tail or _log_end(run.state.log))
                       for r in rows for run in r.runs if run.state.state not in (jobs.DONE, jobs.NEW)]
        if plan.figure:
            png = study.paths.figure(name).with_suffix(".png")
            if png.exists():
                pictures.append((f"{plan.paper} {name.split('/')[1]}: {figures.caption(plan.figure, plan.title)}", png))
            continue
        if name in collected.tables:
            tables.append((name, collected.tables[name]))
        drawn = [(plan, rc) for rc in trained(registered) if rc.plan == name]
        try:
            out = study.paths.site / f"{name.replace('/', '-')}-curves"
            png = next(p for p in figures.kind("training_curves").draw(study.paths, one_per_row(drawn), out)
                       if p.suffix == ".png")
            pictures.append((f"{plan.paper} {name.split('/')[1]}: training loss and validation AP per epoch", png))
        except UserError:  # nothing trained yet
            pass
        base = _baseline(rows)
        for r in rows:
            if r.kind == CITED:
                cited.append((_name(r), r.row.cited))
            if r.kind != TRAINED:
                continue
            setups.append((_name(r), setup(r)))
            if base is not None and r is not base:
                changes.append((_name(r), f"row {base.row.number}",
                                config_diff(Path(r.runs[0].state.config), Path(base.runs[0].state.config))))
    found = preflight.load(study.paths)
    checked = [found[k] for k in dict.fromkeys(rc.train_key for _, rc in registered) if k in found]
    return Page(paper, summary, tables, pictures, setups, changes, unfinished, cited,
                [(", ".join(f.rows), f.line()) for f in checked])


# ---- renderers -----------------------------------------------------------------------------------
def _summary_lines(s: dict[str, Any]) -> list[str]:
    unit = s["unit"][0].upper() + s["unit"][1:]  # "GPU-hours", not str.capitalize()'s "Gpu-hours"
    to_spend = "unknown until measured" if s["to_spend"] is None else f"{s['to_spend']:.2f}"
    left = ", ".join(f"{n} {state}" for state, n in s["not_finished"].items())
    retry = (" A failed training is still to spend: `sbrrepro run --retry-failed` trains it again."
             if jobs.FAILED in s["not_finished"] else "")
    return [f"Rows reproduced: {s['reproduced']} of {s['run']} run ({s['judged']} judged against the paper; "
            f"{s['rows']} rows in all; {s['scale']} scale on {s['dataset']}).",
            "Verdicts: " + ", ".join(f"{w}: {n}" for w, n in s["verdicts"].items()) + ".",
            f"{unit} spent: {s['spent']:.2f}; still to spend: {to_spend} "
            f"({s['trainings_to_run']} training(s) not finished{': ' + left if left else ''}).{retry}"]


def _value(v: Any) -> str:
    return "(absent)" if v is None else json.dumps(v, default=str)


def to_markdown_page(p: Page, relative_to: Path) -> str:
    out = [f"# {p.paper}: reproduction report", "", *(f"- {line}" for line in _summary_lines(p.summary)), ""]
    for _, table in p.tables:
        out += [to_markdown(table), ""]
    if p.figures:
        out += ["## Figures", ""]
        out += [f"![{caption}]({os.path.relpath(png, relative_to)})  \n{caption}\n" for caption, png in p.figures]
    if p.setups:
        keys = list(p.setups[0][1])
        out += ["## Setup (ours / the paper's)", "", "| row | " + " | ".join(keys) + " |",
                "|" + "---|" * (len(keys) + 1)]
        out += [f"| {name} | " + " | ".join(s.get(k, "") for k in keys) + " |" for name, s in p.setups]
        out.append("")
    if p.changes:
        out += ["## Changes against the table's baseline row (MMDetection config keys)", ""]
        for name, against, diff in p.changes:
            out.append(f"- **{name}** against {against}: " + ("no difference" if not diff else ""))
            out += [f"  - `{k}`: {_value(a)} → {_value(b)}" for k, a, b in diff[:DIFF_KEYS]]
            if len(diff) > DIFF_KEYS:
                out.append(f"  - … and {len(diff) - DIFF_KEYS} more")
        out.append("")
    if p.unfinished:
        out += ["## Still running or failed", ""]
        for name, state, log in p.unfinished:
            out += [f"- **{name}**: {state}", *(["", "```", log, "```"] if log else [])]
        out.append("")
    if p.cited:
        out += ["## Cited rows (another paper's numbers, not reproduced)", ""]
        out += [f"- {name}: {ref}" for name, ref in p.cited]
        out.append("")
    if p.preflight:
        out += ["## Preflight (a few full-scale training steps per training)", ""]
        out += [f"- {rows}: {line}" for rows, line in p.preflight]
        out.append("")
    return "\n".join(out)


def to_html_page(p: Page) -> str:
    """The page from templates/report.html.j2 (escaped there): here only what it shows, each figure's
    PNG as base64 and each config change's values as JSON."""
    changes = [(name, against, len(diff), [(k, _value(a), _value(b)) for k, a, b in diff[:DIFF_KEYS]],
                len(diff) - DIFF_KEYS) for name, against, diff in p.changes]
    return HTML.get_template("report.html.j2").render(
        paper=p.paper, summary=_summary_lines(p.summary), tables=p.tables,
        figures=[(caption, png.stem, base64.b64encode(png.read_bytes()).decode()) for caption, png in p.figures],
        setups=p.setups, setup_keys=list(p.setups[0][1]) if p.setups else [], changes=changes,
        unfinished=p.unfinished, cited=p.cited, preflight=p.preflight)


def write_reports(study: Study, collected: Collected) -> list[Path]:
    """Per paper of the study: <paper>.html and <paper>.md in the study's report/site folder."""
    written = []
    for paper in dict.fromkeys(p.paper for p in collected.plans.values()):
        p = page(study, collected, paper)
        for suffix, text in ((".html", to_html_page(p)), (".md", to_markdown_page(p, study.paths.site))):
            path = study.paths.site / f"{paper}{suffix}"
            atomic_write(path, text)
            written.append(path)
    return written
