"""The report page and the LaTeX tables, byte for byte: a crafted study (no training: its runs'
files are written as a finished job leaves them, with fixed times) rendered as `report` and
`collect` render it, against golden files in tests/golden/. Its labels hold every character HTML
and LaTeX escape, and its tables every layout: flat, with column groups, and stacked (more than
WIDE metrics). SBRREPRO_UPDATE_GOLDEN=1 writes the golden files anew (then review their diff)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import require_tool

from sbrrepro import figures, jobs
from sbrrepro.collect import Collected, plan_results, table_of
from sbrrepro.config_files import write_configs
from sbrrepro.configs import full_scale
from sbrrepro.params import Counts
from sbrrepro.plan import load_plan
from sbrrepro.render import tex, to_html, to_latex
from sbrrepro.report import page, to_html_page
from sbrrepro.study import Study
from sbrrepro.table import Table, TableRow
from sbrrepro.verdicts import NOT_REPRODUCED, NOT_RUN, OTHER_SETUP, REPRODUCED
from sbrrepro.verify import Cell

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
STARTED = 1_700_000_000  # the runs' start, fixed: the page's hours come from it
# a 1x1 PNG: the training curves' figure, fixed (matplotlib's bytes vary with its version)
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
                       "AAAABJRU5ErkJggg==")

PLAN = """
paper: crafted
table: "1"
title: Crafted <results> & 50% of R^3-CNN_x
metrics: [bbox_AP, segm_AP]
tolerance: 0.5
published: published.csv
recipe_file: {recipe}
rows:
  - {{row: 1, model: mask_rcnn, seeds: [0, 1, 2]}}
  - {{row: 2, model: mask_rcnn, options: {{addon: gcnet}}}}
  - {{row: 3, model: r3_cnn, options: {{loops: 2}}}}
  - {{row: 4, model: r3_cnn, options: {{loops: 3}}}}
  - {{row: 5, cited: "Other & <al.> 2020"}}
  - {{row: 6, model: r3_cnn, options: {{loops: 4}}}}
  - {{row: 7, model: mask_rcnn, recipe: {{epochs: 24, lr_steps: [16, 22]}}}}
  - {{row: 8, derived: [1, 2]}}
"""
PUBLISHED = '''row,method,bbox_AP,segm_AP
1,Mask <R-CNN> & co,38.2,34.7
2,"Naive_1 ""quoted""",38.0,35.0
3,R2 $x$ {b} #1 | 100%,40.4,36.7
4,R3 ~ 'apostrophe' \\ ^,40.9,37.2
5,Other,41.0,37.0
6,R4,40.9,37.4
7,Mask 2x,39.0,35.5
8,Improvement,0.2,-0.3
'''
BOX = ["bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl"]


def _finish(study: Study, key: str, bbox: float, segm: float, lr_scaled: bool = False, epochs: int = 12) -> None:
    """What a finished training leaves (MMEngine's scalars, the job's provenance, done.json), one hour long."""
    run = study.paths.run(key)
    log = run.root / "20260101_000000" / "vis_data" / "scalars.json"
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({"loss": 1.0, "epoch": epochs, "iter": 1, "step": 1}) + "\n" +
                   json.dumps({"coco/bbox_mAP": bbox, "coco/segm_mAP": segm, "step": epochs}) + "\n")
    run.provenance.write_text(json.dumps({
        "lr_scaled": lr_scaled, "started": STARTED, "processes": 8, "gpus": 8, "device": "Tesla <V100> & 'co'",
        "batch": 32 if lr_scaled else 16, "lr_effective": 0.04 if lr_scaled else 0.02, "seed": 0,
        "versions": {"mmdet": "3.3.0", "mmcv": "2.1.0", "mmengine": "0.10.7", "torch": "2.13.0"},
        "sbrrepro_commit": "abc1234"}))
    run.done.write_text(json.dumps({"epochs": epochs, "finished": STARTED + 3600}))


def _crafted(tmp_path: Path) -> tuple[Study, Collected, Table]:
    """tests/test_report.py's crafted study (every verdict), its rows 3 and 4 failed and running, as
    their jobs' states say."""
    (tmp_path / "plan.yaml").write_text(PLAN.format(recipe=REPO / "plans" / "sbr-cnn" / "recipe.yaml"))
    (tmp_path / "published.csv").write_text(PUBLISHED)
    plan = load_plan(tmp_path / "plan.yaml")
    study = Study.open(tmp_path / "study", "full", create=True)
    written = write_configs(plan, full_scale(tmp_path / "coco"), study.paths)
    study.register((plan.path, written))
    by_row: dict[int, list] = {}
    for rc in written:
        by_row.setdefault(rc.row, []).append(rc)
    for rc, (b, s) in zip(by_row[1], [(0.380, 0.345), (0.382, 0.347), (0.384, 0.349)]):
        _finish(study, rc.key, b, s)
    _finish(study, by_row[2][0].key, 0.370, 0.350)
    _finish(study, by_row[6][0].key, 0.410, 0.373, lr_scaled=True)
    _finish(study, by_row[7][0].key, 0.391, 0.355, epochs=6)
    states = {s.key: s for s in jobs.states(study, written)}
    state_of = {}
    for rc in written:
        s = states[rc.key]
        if rc.row == 3:
            s = replace(s, state="failed", log_tail="Traceback <most recent> & 'x'\nFileNotFoundError: \"coco\"")
        elif rc.row == 4:
            s = replace(s, state="running")
        state_of[(rc.plan, rc.row, rc.seed)] = s
    results = plan_results(study, plan, by_row, state_of, Counts(study.paths.params))
    table = table_of(plan, results, "full", "coco2017")
    collected = Collected(study.paths.results, [], [], {plan.name: table}, [], {}, {plan.name: results},
                          {plan.name: plan})
    return study, collected, table


def _wide() -> Table:
    """More than WIDE metrics, one column group and a metric on its own: each row on two lines."""
    metrics = [*BOX, "segm_AP"]
    rows = [TableRow(["1", "Mask & <co>"], {m: Cell(40.0 + i, 40.2 + i, 0.1) for i, m in enumerate(metrics)},
                     REPRODUCED),
            TableRow(["2", "HTC_2"], {m: Cell(41.0, 41.5 + i / 10, None) for i, m in enumerate(metrics)},
                     OTHER_SETUP, marks=("batch",)),
            TableRow(["3", "CondInst"], {m: Cell(39.0, 38.0) for m in metrics}, NOT_REPRODUCED),
            TableRow(["4", "Cited"], {m: Cell(42.0, None) for m in metrics}, NOT_RUN, ranked=False)]
    return Table("sbr-cnn table11: wide & <stacked>", "c", ["#", "method"], metrics, rows, "coco2017",
                 notes=["Row 4: cited (A & B 2021)."])


def _grouped() -> Table:
    """A flat table (three metrics) with a column group over two of them, against a baseline row."""
    metrics = ["bbox_AP", "bbox_AP50", "segm_AP"]
    rows = [TableRow(["1", "base"], {m: Cell(40.0, 40.0) for m in metrics}, REPRODUCED),
            TableRow(["2", "ours"], {m: Cell(40.0, 41.0) for m in metrics}, NOT_REPRODUCED, marks=("schedule",))]
    return Table("own table2: grouped", "caption", ["#", "method"], metrics, rows, "coco2017", reference="row 1")


@pytest.fixture
def outputs(tmp_path, monkeypatch) -> dict[str, str]:
    """Each golden file's name -> what the code renders now."""
    png = tmp_path / "curves.png"
    png.write_bytes(PNG)

    class Curves:
        @staticmethod
        def draw(paths, rows, out) -> list[Path]:
            return [png]

    monkeypatch.setattr(figures, "kind", lambda name: Curves)
    study, collected, table = _crafted(tmp_path)
    p = page(study, collected, "crafted")
    many = [(f"key.{i}", None if i % 2 else i, [i, "b"]) for i in range(30)]  # more than DIFF_KEYS
    p = replace(p, tables=[*p.tables, ("sbr-cnn/table11", _wide()), ("own/table2", _grouped())],
                changes=[*p.changes, ("own row 2 <x>", "row 1", many), ("own row 3", "row 1", [])],
                preflight=[("crafted/table1 rows 1 & 2", "fits: 5.1 GB of <80 GB>")])
    out = {"report.html": to_html_page(p), "crafted.tex": to_latex(table), "wide.tex": to_latex(_wide()),
           "grouped.tex": to_latex(_grouped()), "wide.html": to_html(_wide()) + "\n"}
    return {name: text.replace(str(tmp_path), "<tmp>") for name, text in out.items()}


def test_the_report_page_and_the_latex_tables_match_their_golden_files(outputs):
    if os.environ.get("SBRREPRO_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        for name, text in outputs.items():
            (GOLDEN / name).write_bytes(text.encode())
    for name, text in outputs.items():  # the golden bytes decoded as they are (no newline translation)
        assert text == (GOLDEN / name).read_bytes().decode(), f"{name} differs from tests/golden/{name}"


def test_the_crafted_outputs_cover_what_they_are_meant_to(outputs):
    page_ = outputs["report.html"]
    assert "<tmp>" not in page_ and "Mask &lt;R-CNN&gt; &amp; co" in page_ and "<pre>Traceback &lt;" in page_
    assert "… and 5 more" in page_ and "own row 3 against row 1: 0 key(s)" in page_ and "<img alt=" in page_
    assert page_.count('<table class="results">') == 3 and 'rowspan="2"' in page_ and 'class="group"' in page_
    assert r"R2 \$x\$ \{b\} \#1" in outputs["crafted.tex"] and r"\\[2pt]" in outputs["wide.tex"]
    assert r"\multicolumn{6}{c}{Bounding box}" in outputs["wide.tex"] and r"\cmidrule" in outputs["grouped.tex"]


def test_the_latex_tables_compile_with_the_packages_they_name_and_pdflatexs_default_fonts(tmp_path):
    """Their first line names booktabs, amssymb and graphicx, nothing else: in pdflatex's default OT1
    fonts a bare < > | prints as ¡ ¿ —, so the tex filter writes them as text commands."""
    assert tex("|x| < 1 > 0") == r"\textbar{}x\textbar{} \textless{} 1 \textgreater{} 0"
    pdflatex = require_tool("pdflatex")
    names = ["crafted.tex", "wide.tex", "grouped.tex"]
    for name in names:
        (tmp_path / name).write_bytes((GOLDEN / name).read_bytes())
    (tmp_path / "doc.tex").write_text("\n".join([r"\documentclass{article}", r"\usepackage{booktabs,amssymb,graphicx}",
                                                 r"\begin{document}", *(rf"\input{{{n}}}" for n in names),
                                                 r"\end{document}", ""]))
    done = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "Missing character" not in (tmp_path / "doc.log").read_text(errors="replace")
