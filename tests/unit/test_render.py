"""The report page and the LaTeX tables, byte for byte: a crafted study (no training: its runs'
files are written as a finished job leaves them, with fixed times) rendered as `report` and
`collect` render it, against golden files in tests/golden/. Its labels hold every character HTML
and LaTeX escape, and its tables every layout: flat, with column groups, and stacked (more than
WIDE metrics). SBRREPRO_UPDATE_GOLDEN=1 writes the golden files anew (then review their diff).
Then the renderers' own cases: the terminal table in a narrow width and styled, a wide table's
stacked lines, the tex filter."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from sbrrepro import figures
from sbrrepro.collect import Collected, table_of
from sbrrepro.render import tex, to_html, to_latex, to_terminal
from sbrrepro.report import page, to_html_page
from sbrrepro.study import Study
from sbrrepro.table import Table, TableRow
from sbrrepro.verdicts import NOT_REPRODUCED, NOT_RUN, OTHER_SETUP, REPRODUCED
from sbrrepro.verify import Cell
from tests.helpers import REPO, crafted_results, crafted_study, require_tool

GOLDEN = REPO / "tests" / "golden"
STARTED = 1_700_000_000  # the runs' start, fixed: the page's hours come from it
# a 1x1 PNG: the training curves' figure, fixed (matplotlib's bytes vary with its version)
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
                       "AAAABJRU5ErkJggg==")

LABELS = ("Mask <R-CNN> & co", 'Naive_1 "quoted"', "R2 $x$ {b} #1 | 100%", "R3 ~ 'apostrophe' \\ ^", "Other", "R4",
          "Mask 2x", "Improvement")  # the crafted table's methods: every character HTML and LaTeX escape
BOX = ["bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl"]


def _crafted(tmp_path: Path) -> tuple[Study, Collected, Table]:
    """The crafted study of tests.helpers (every verdict), its labels, title and citation to escape, its
    runs started at STARTED, its rows 3 and 4 failed (with its log's end) and running, as their jobs'
    states say."""
    plan, study, written = crafted_study(tmp_path, title="Crafted <results> & 50% of R^3-CNN_x",
                                         cited="Other & <al.> 2020", labels=LABELS)
    results = crafted_results(plan, study, written, started=STARTED, device="Tesla <V100> & 'co'",
                              log_tail="Traceback <most recent> & 'x'\nFileNotFoundError: \"coco\"")
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


@pytest.mark.latex
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


def test_the_terminal_table_fits_its_width_and_styles_only_when_asked(crafted):
    plan, _, results = crafted
    table = table_of(plan, results, "full", "coco2017")
    narrow = to_terminal(table, width=70)
    body = [line for line in narrow.splitlines() if line[:1].isdigit() or line.startswith("#")]
    assert all(len(line) <= 70 for line in body), body
    assert sum(line.startswith("#") for line in body) == 3, "blocks under the lead columns: B_AP, S_AP, Verdict"
    assert "\033[" not in narrow
    styled = to_terminal(table, styled=True)
    assert "\033[1m41.0\033[0m" in styled and "\033[4m39.1\033[0m" in styled


def test_a_wide_table_stacks_the_papers_numbers_over_ours_in_latex_and_html():
    metrics = ["bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl", "segm_AP"]
    row = TableRow(["1", "Mask"], {m: Cell(40.0, 40.2 + i, None) for i, m in enumerate(metrics)}, REPRODUCED)
    other = TableRow(["2", "HTC"], {m: Cell(41.0, None) for m in metrics}, NOT_RUN)
    latex = to_latex(Table("t", "c", ["#", "method"], metrics, [row, other], "coco2017"))
    assert r"1 & Mask & Paper & 40.0 & 40.0 & 40.0 & 40.0 & 40.0 & 40.0 & 40.0 &  \\" in latex
    assert (r" &  & Ours & 40.2 (+0.2) & 41.2 (+1.2) & 42.2 (+2.2) & 43.2 (+3.2) & 44.2 (+4.2) & 45.2 (+5.2) & "
            r"46.2 (+6.2) & \checkmark{} reproduced \\[2pt]") in latex, "one value per column: nothing to rank"
    assert r" &  & Ours & -- & -- & -- & -- & -- & -- & -- & $\circ$ not run \\[2pt]" in latex
    page = to_html(Table("t", "c", ["#", "method"], metrics, [row, other], "coco2017"))  # the same two lines per row
    assert ('<td class="lead" rowspan="2">Mask</td><td class="lead">Paper</td><td class="num">40.0</td>' in page
            and '<td class="verdict" rowspan="2">✓ reproduced</td></tr>' in page)
    assert '<tr class="v-reproduced ours"><td class="lead">Ours</td><td class="num">40.2 (+0.2)</td>' in page


def test_tex_escapes_once():
    assert tex("R^3-CNN 50% & ±") == r"R$^{3}$-CNN 50\% \& $\pm$"
    assert re.fullmatch(r"[ -~]*", tex("ümlaut ✓ ≈ ‡ § ¶ …"))
