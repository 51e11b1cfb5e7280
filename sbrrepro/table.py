"""The one table model that every renderer draws (`render`): a paper table's rows in its layout,
each metric a group of (published or baseline, ours, signed Δ) under the paper's column groups, the
verdict per row, and the best and second best of each of our columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from .metrics import METRICS
from .verdicts import FOOTNOTES, Verdict, footnote
from .verify import Cell

BEST, SECOND = 1, 2


@dataclass(frozen=True)
class TableRow:
    lead: list[str]  # the descriptive cells: row number, then the paper's own columns
    cells: dict[str, Cell]  # metric -> published, ours (the seeds' mean) and Δ
    verdict: Verdict
    marks: tuple[str, ...] = ()  # FOOTNOTES keys: how its runs differ from the paper's setup
    ranked: bool = True  # competes for best and second best (a derived line or a cited row does not)

    @property
    def seeds(self) -> int:
        return max((c.seeds for c in self.cells.values() if c.ours is not None), default=1)

    def verdict_text(self) -> str:
        """Symbol and word, the seeds the mean is over, then the footnote marks."""
        seeds = f" ({self.seeds} seeds)" if self.seeds > 1 else ""
        return f"{self.verdict.symbol} {self.verdict.word}{seeds}{''.join(FOOTNOTES[m][0] for m in self.marks)}"


@dataclass(frozen=True)
class Table:
    title: str
    caption: str
    lead: list[str]  # headers of the descriptive columns
    metrics: list[str]
    rows: list[TableRow]
    dataset: str  # what the study trained on (`Study.dataset`), which the smoke scale's footnote names
    reference: str = "Paper"  # what each metric's first column holds: the paper's number, or a baseline row's
    notes: list[str] = field(default_factory=list)  # further lines under the table (cited rows, derived lines)

    @property
    def groups(self) -> list[tuple[str | None, list[str]]]:
        """Consecutive metrics under one paper column group (None: a metric on its own)."""
        out: list[tuple[str | None, list[str]]] = []
        for m in self.metrics:
            group = METRICS[m].group
            if out and group is not None and out[-1][0] == group:
                out[-1][1].append(m)
            else:
                out.append((group, [m]))
        return [(g if len(ms) > 1 else None, ms) for g, ms in out]

    @property
    def footnotes(self) -> list[tuple[str, str]]:
        """(mark, text) of every setup difference some row has, in FOOTNOTES' order."""
        used = {m for r in self.rows for m in r.marks}
        return [footnote(k, self.dataset) for k in FOOTNOTES if k in used]

    @cached_property
    def ranks(self) -> dict[tuple[int, str], int]:
        """(row index, metric) -> BEST or SECOND among our values of that column, as printed; only
        for metrics with a better direction and where at least two rows have a value."""
        out = {}
        for m in self.metrics:
            spec = METRICS[m]
            values = {i: round(r.cells[m].ours, spec.decimals) for i, r in enumerate(self.rows)
                      if r.ranked and r.cells[m].ours is not None}
            if not spec.better or len(values) < 2:
                continue
            distinct = sorted(set(values.values()), reverse=spec.better > 0)
            for i, v in values.items():
                if v in distinct[:2]:
                    out[(i, m)] = BEST if v == distinct[0] else SECOND
        return out
