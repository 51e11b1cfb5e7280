"""Stage 5: the table model (`table.Table`) -> text. Four renderers of one model: terminal,
Markdown, LaTeX and HTML. Best and second best of our columns are bold and underlined (ANSI styles
on a terminal), as the papers print them. LaTeX and HTML come from jinja2 templates
(sbrrepro/templates/), which hold the markup; this module says what goes in them."""

from __future__ import annotations

import html
import re
from typing import Any, NamedTuple

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from .metrics import LABELS, METRICS
from .table import BEST, SECOND, Table
from .verify import Cell

ABSENT = "–"  # a number not there (not published, not run)


def _num(v: float | None, decimals: int, signed: bool = False) -> str:
    if v is None:
        return ABSENT
    return f"{v:{'+' if signed else ''},.{decimals}f}"


def _ours(cell: Cell, decimals: int) -> str:
    text = _num(cell.ours, decimals)
    return text if cell.std is None else f"{text} ± {cell.std:.{decimals}f}"


def cells(table: Table) -> list[list[tuple[str, int]]]:
    """Every row as (text, rank) cells: lead, then per metric published, ours, Δ, then the verdict;
    the rank (BEST, SECOND or 0) is that of ours."""
    out = []
    for i, row in enumerate(table.rows):
        line = [(c, 0) for c in row.lead]
        for m in table.metrics:
            c, d = row.cells[m], METRICS[m].decimals
            line += [(_num(c.published, d), 0), (_ours(c, d), table.ranks.get((i, m), 0)),
                     (_num(c.diff, d, signed=True), 0)]
        out.append([*line, (row.verdict_text(), 0)])
    return out


def _flat_header(table: Table) -> list[str]:
    return [*table.lead, *(f"{LABELS[m]} {s}" for m in table.metrics for s in (table.reference, "Ours", "Δ")),
            "Verdict"]


def _label(table: Table, m: str) -> str:
    """A metric's header under its column group (AP50 under Bounding box), or on its own (B_AP)."""
    return METRICS[m].short if any(g == METRICS[m].group for g, _ in table.groups if g) else LABELS[m]


def _footer(table: Table) -> list[str]:
    return [table.caption, *(f"{mark} {text}." for mark, text in table.footnotes), *table.notes]


def to_markdown(table: Table) -> str:
    def styled(text: str, rank: int) -> str:
        return f"**{text}**" if rank == BEST else f"<u>{text}</u>" if rank == SECOND else text

    header = _flat_header(table)
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < len(table.lead) else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(styled(t, r) for t, r in row) + " |" for row in cells(table)]
    return "\n".join([*lines, "", *(f"{line}  " for line in _footer(table)), ""])


ANSI = {BEST: ("\033[1m", "\033[0m"), SECOND: ("\033[4m", "\033[0m")}


def to_terminal(table: Table, width: int | None = None, styled: bool = False) -> str:
    """Aligned columns; with `width`, the metrics split into blocks that fit it, each block under the
    lead columns again (the verdict with the last); `styled`: best bold, second underlined (ANSI)."""
    body = cells(table)
    n_lead, n_metrics = len(table.lead), len(table.metrics)
    header = _flat_header(table)
    widths = [max(len(r[i][0]) for r in [[(h, 0) for h in header], *body]) for i in range(len(header))]
    lead_width = sum(widths[:n_lead]) + 2 * n_lead
    verdict = len(header) - 1
    room = width - lead_width if width else None
    blocks, block = [], []
    for j in range(n_metrics):
        cols = [n_lead + 3 * j + k for k in range(3)]
        if block and room is not None and sum(widths[c] + 2 for c in block + cols) > room:
            blocks.append(block)
            block = []
        block += cols
    if room is not None and sum(widths[c] + 2 for c in [*block, verdict]) > room:
        blocks.append(block)
        block = []
    blocks.append([*block, verdict])

    def line(cols: list[int], texts: list[tuple[str, int]]) -> str:
        parts = []
        for i in cols:
            text, rank = texts[i]
            pad = text.ljust(widths[i]) if i < n_lead or i == len(header) - 1 else text.rjust(widths[i])
            if styled and rank:
                pad = pad.replace(text, ANSI[rank][0] + text + ANSI[rank][1])
            parts.append(pad)
        return "  ".join(parts).rstrip()

    out = [table.title]
    for cols in blocks:
        cols = list(range(n_lead)) + cols
        out += [line(cols, [(h, 0) for h in header]), *(line(cols, row) for row in body)]
    return "\n".join([*out, *_footer(table)])


_TEX_ESCAPES = {"&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "^": r"\textasciicircum{}", "~": r"$\sim$",
                "$": r"\$", "{": r"\{", "}": r"\}", "\\": r"\textbackslash{}", "✓": r"\checkmark{}",
                "✗": r"$\times$", "×": r"$\times$", "–": "--", "—": "---", "Δ": r"$\Delta$", "−": "$-$",
                "≤": r"$\leq$", "±": r"$\pm$", "≈": r"$\approx$", "≠": r"$\neq$", "○": r"$\circ$", "…": r"\ldots{}",
                "»": r"$\gg$", "·": r"$\cdot$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "§": r"\S{}", "¶": r"\P{}",
                "λ": r"$\lambda$", "’": "'", "“": "``", "”": "''", "³": r"$^{3}$", "²": r"$^{2}$",
                # pdflatex's default (OT1) fonts print < > | as ¡ ¿ —: the text commands print them in any encoding
                "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def tex(text: str) -> str:
    """Plain text -> LaTeX: a ^ before a word is a superscript (R^3-CNN -> R$^{3}$-CNN), every other
    character escaped once; a character LaTeX has no escape for here becomes '?', so that every
    generated file compiles with pdflatex."""
    pieces = re.split(r"\^(\w+)", text)  # text, superscript, text, ...

    def escape(ch: str) -> str:
        return _TEX_ESCAPES.get(ch, ch if ch.isascii() else "?")

    return "".join(f"$^{{{p}}}$" if i % 2 else "".join(map(escape, p)) for i, p in enumerate(pieces))


WIDE = 6  # more metrics than this: in LaTeX each row takes two lines (the paper's numbers, then ours and Δ)


class _Metric(NamedTuple):
    published: str
    ours: str
    rank: int
    delta: str


class _Row(NamedTuple):
    css: str  # the verdict's class, for its colour in HTML
    texts: list[tuple[str, int]]  # every cell, as `cells` gives them
    lead: list[tuple[str, int]]
    metrics: list[_Metric]
    verdict: str


def _rows(table: Table) -> list[_Row]:
    """`cells` by what each cell is: what the stacked layout (one cell per metric) takes apart."""
    n = len(table.lead)
    out = []
    for row, texts in zip(table.rows, cells(table)):
        triples = [texts[n + 3 * i: n + 3 * i + 3] for i in range(len(table.metrics))]
        out.append(_Row("v-" + row.verdict.word.split(",")[0].replace(" ", "-"), texts, texts[:n],
                        [_Metric(p[0], o[0], o[1], d[0]) for p, o, d in triples], texts[-1][0]))
    return out


def _layout(table: Table) -> dict[str, Any]:
    """What both templates draw a table from. `per`: columns per metric (1 when stacked); `before`:
    columns before the first metric's (the lead, and when stacked the lines' names); `groups`: each
    column group's name (None: a metric on its own), columns and first column, where any has a name."""
    stacked = len(table.metrics) > WIDE
    per, before = 1 if stacked else 3, len(table.lead) + stacked
    groups, at = [], before + 1
    if any(g for g, _ in table.groups):
        for group, metrics in table.groups:
            groups.append((group, per * len(metrics), at))
            at += per * len(metrics)
    return {"title": table.title, "reference": table.reference, "lead": table.lead, "n_lead": len(table.lead),
            "stacked": stacked, "per": per, "before": before, "groups": groups,
            "labels": [_label(table, m) for m in table.metrics], "rows": _rows(table), "footer": _footer(table)}


def _html_escape(value: Any) -> Any:
    """Every {{ }} of the HTML templates, escaped by html.escape rather than markupsafe (&quot; and
    &#x27;, not &#34; and &#39;), so that the pages are byte for byte what they were; the output of
    a macro (Markup) is left as it is."""
    return value if hasattr(value, "__html__") else Markup(html.escape(str(value)))


_OPTIONS: dict[str, Any] = {"trim_blocks": True, "lstrip_blocks": True, "keep_trailing_newline": True,
                            "undefined": StrictUndefined}
HTML = Environment(loader=PackageLoader("sbrrepro", "templates"), autoescape=select_autoescape(["html.j2"]),
                   finalize=_html_escape, **_OPTIONS)
# LaTeX's braces would end {{ }}: its tags are \VAR{...} and \BLOCK{...}; nothing is escaped but by `tex`
LATEX = Environment(loader=PackageLoader("sbrrepro", "templates"), autoescape=False, block_start_string="\\BLOCK{",
                    block_end_string="}", variable_start_string="\\VAR{", variable_end_string="}",
                    comment_start_string="\\#{", comment_end_string="}", **_OPTIONS)
for _env in (HTML, LATEX):
    _env.globals.update(BEST=BEST, SECOND=SECOND, ABSENT=ABSENT)
LATEX.filters["tex"] = tex


def to_latex(table: Table) -> str:
    """A booktabs table in the paper's layout: the column groups over their metrics, each metric's
    published number, ours and Δ side by side, or for a table of more than WIDE metrics (SBR-CNN
    Table 11's twelve) one above the other, as wide tables print; scaled to the line width (needs
    booktabs, amssymb and graphicx)."""
    return LATEX.get_template("table.tex.j2").render(_layout(table))


def _results_table(table: Table) -> Markup:
    """The HTML of a table: the `results_table` macro, which the report page calls through this filter."""
    return HTML.get_template("table.html.j2").module.results_table(_layout(table))


HTML.filters["results_table"] = _results_table


def to_html(table: Table) -> str:
    """A <table> with the paper's column groups as header rows; best <b>, second <u>; each verdict a
    symbol and a word (its class only adds colour). More than WIDE metrics: each row on two lines,
    the paper's numbers then ours (Δ), as in LaTeX, so that the table fits a page."""
    return str(_results_table(table))
