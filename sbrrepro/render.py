"""Stage 5: the table model (`table.Table`) -> text. Four renderers of one model: terminal,
Markdown, LaTeX and HTML. Best and second best of our columns are bold and underlined (ANSI styles
on a terminal), as the papers print them."""

from __future__ import annotations

import html
import re

from .metrics import LABELS, METRICS
from .table import BEST, SECOND, Table
from .verify import Cell


def _num(v: float | None, decimals: int, signed: bool = False) -> str:
    if v is None:
        return "–"
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
                "λ": r"$\lambda$", "’": "'", "“": "``", "”": "''", "³": r"$^{3}$", "²": r"$^{2}$"}


def tex(text: str) -> str:
    """Plain text -> LaTeX: a ^ before a word is a superscript (R^3-CNN -> R$^{3}$-CNN), every other
    character escaped once; a character LaTeX has no escape for here becomes '?', so that every
    generated file compiles with pdflatex."""
    pieces = re.split(r"\^(\w+)", text)  # text, superscript, text, ...

    def escape(ch: str) -> str:
        return _TEX_ESCAPES.get(ch, ch if ch.isascii() else "?")

    return "".join(f"$^{{{p}}}$" if i % 2 else "".join(map(escape, p)) for i, p in enumerate(pieces))


def _tex_cell(text: str, rank: int) -> str:
    body = tex(text)
    return rf"\textbf{{{body}}}" if rank == BEST else rf"\underline{{{body}}}" if rank == SECOND else body


WIDE = 6  # more metrics than this: in LaTeX each row takes two lines (the paper's numbers, then ours and Δ)


def to_latex(table: Table) -> str:
    """A booktabs table in the paper's layout: the column groups over their metrics, each metric's
    published number, ours and Δ side by side, or for a table of more than WIDE metrics (SBR-CNN
    Table 11's twelve) one above the other, as wide tables print; scaled to the line width (needs
    booktabs, amssymb and graphicx)."""
    n_lead, n = len(table.lead), len(table.metrics)
    stacked = n > WIDE
    per = 1 if stacked else 3  # columns per metric
    before = n_lead + stacked  # columns before the first metric's: the lead, and the stacked lines' names
    lines = ["% generated by sbrrepro; needs \\usepackage{booktabs,amssymb,graphicx}", r"\begin{table}[t]",
             r"\centering", rf"\caption{{{tex(table.title)}}}", r"\resizebox{\linewidth}{!}{%",
             rf"\begin{{tabular}}{{{'l' * before}{('r' * per) * n}l}}", r"\toprule"]
    if any(g for g, _ in table.groups):
        spans, rules, at = [], [], before + 1
        for group, metrics in table.groups:
            span = per * len(metrics)
            spans.append(rf"\multicolumn{{{span}}}{{c}}{{{tex(group)}}}" if group else " & " * (span - 1))
            if group:
                rules.append(rf"\cmidrule(lr){{{at}-{at + span - 1}}}")
            at += span
        lines += [" & " * before + " & ".join(spans) + r" & \\", *rules]
    heads = [rf"\multicolumn{{{per}}}{{c}}{{{tex(_label(table, m))}}}" for m in table.metrics]
    lead = " & ".join([*(tex(c) for c in table.lead), *([""] if stacked else [])])
    if stacked:
        lines += [lead + " & " + " & ".join(heads) + r" & Verdict \\", r"\midrule"]
    else:
        lines.append(lead + " & " + " & ".join(heads) + r" & \\")
        lines += [rf"\cmidrule(lr){{{before + 3 * i + 1}-{before + 3 * i + 3}}}" for i in range(n)]
        subs = " & ".join([tex(table.reference), "Ours", r"$\Delta$"] * n)
        lines += [" & " * n_lead + subs + r" & Verdict \\", r"\midrule"]
    for row in cells(table):
        if not stacked:
            lines.append(" & ".join(_tex_cell(t, r) for t, r in row) + r" \\")
            continue
        triples = [row[n_lead + 3 * i: n_lead + 3 * i + 3] for i in range(n)]
        lines.append(" & ".join([*(_tex_cell(t, r) for t, r in row[:n_lead]), tex(table.reference),
                                 *(tex(published[0]) for published, _, _ in triples), ""]) + r" \\")
        ours = [_tex_cell(o[0], o[1]) + (f" ({tex(d[0])})" if d[0] != "–" else "") for _, o, d in triples]
        lines.append(" & " * n_lead + " & ".join(["Ours", *ours, _tex_cell(*row[-1])]) + r" \\[2pt]")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\par\smallskip\footnotesize",
              *(tex(line) + r"\par" for line in _footer(table)), r"\end{table}", ""]
    return "\n".join(lines)


def to_html(table: Table) -> str:
    """A <table> with the paper's column groups as header rows; best <b>, second <u>; each verdict a
    symbol and a word (its class only adds colour). More than WIDE metrics: each row on two lines,
    the paper's numbers then ours (Δ), as in LaTeX, so that the table fits a page."""
    e = html.escape
    n_lead, stacked = len(table.lead), len(table.metrics) > WIDE
    per = 1 if stacked else 3

    def cell(text: str, rank: int, kind: str, extra: str = "", after: str = "") -> str:
        inner = f"<b>{e(text)}</b>" if rank == BEST else f"<u>{e(text)}</u>" if rank == SECOND else e(text)
        return f'<td class="{kind}"{extra}>{inner}{e(after)}</td>'

    head = []
    if any(g for g, _ in table.groups):
        head.append("<tr>" + f'<th colspan="{n_lead + stacked}"></th>' + "".join(
            f'<th colspan="{per * len(ms)}" class="group">{e(g or "")}</th>' for g, ms in table.groups)
            + "<th></th></tr>")
    span = "" if stacked else ' rowspan="2"'
    head.append("<tr>" + "".join(f"<th{span}>{e(c)}</th>" for c in table.lead) + ("<th></th>" if stacked else "")
                + "".join(f'<th colspan="{per}">{e(_label(table, m))}</th>' for m in table.metrics)
                + f"<th{span}>Verdict</th></tr>")
    if not stacked:
        head.append("<tr>" + f"<th>{e(table.reference)}</th><th>Ours</th><th>Δ</th>" * len(table.metrics) + "</tr>")
    body = []
    for row, texts in zip(table.rows, cells(table)):
        verdict_class = "v-" + row.verdict.word.split(",")[0].replace(" ", "-")
        if not stacked:
            tds = [cell(text, rank, "lead" if i < n_lead else "verdict" if i == len(texts) - 1 else "num")
                   for i, (text, rank) in enumerate(texts)]
            body.append(f'<tr class="{verdict_class}">' + "".join(tds) + "</tr>")
            continue
        triples = [texts[n_lead + 3 * i: n_lead + 3 * i + 3] for i in range(len(table.metrics))]
        first = ([cell(text, rank, "lead", ' rowspan="2"') for text, rank in texts[:n_lead]]
                 + [cell(table.reference, 0, "lead")] + [cell(p[0], 0, "num") for p, _, _ in triples]
                 + [cell(*texts[-1], "verdict", ' rowspan="2"')])
        second = [cell("Ours", 0, "lead")] + [
            cell(*o, "num", after=f" ({d[0]})" if d[0] != "–" else "") for _, o, d in triples]
        body += [f'<tr class="{verdict_class}">' + "".join(first) + "</tr>",
                 f'<tr class="{verdict_class} ours">' + "".join(second) + "</tr>"]
    footer = "".join(f"<p>{e(line)}</p>" for line in _footer(table))
    return (f'<table class="results"><caption>{e(table.title)}</caption><thead>{"".join(head)}</thead>'
            f'<tbody>{"".join(body)}</tbody></table><div class="caption">{footer}</div>')
