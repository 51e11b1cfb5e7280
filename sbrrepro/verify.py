"""A pure check of our metrics against the published ones, with tolerances (as detectron2's
verify_results): per metric the signed difference, per row a verdict."""

from __future__ import annotations

from dataclasses import dataclass

from .metrics import EXACT, INFORMATIVE, METRICS, PARAMS_RELATIVE, POINTS

MATCH, MISMATCH, MISSING = "✓", "✗", "–"


@dataclass(frozen=True)
class Cell:
    published: float | None
    ours: float | None

    @property
    def diff(self) -> float | None:
        if self.published is None or self.ours is None:
            return None
        return round(self.ours - self.published, 6)  # no float noise in reports and JSON


def number(text: str | None) -> float | None:
    """A published cell as printed ('44,170' included); None for a blank or a dash."""
    try:
        return float(text.replace(",", "")) if text not in (None, "") else None
    except ValueError:
        return None


def _within(metric: str, cell: Cell, points: float) -> bool:
    rule = METRICS[metric].compare
    if rule == POINTS:
        return abs(cell.diff) <= points + 1e-9
    if rule == EXACT:
        return cell.diff == 0
    return abs(cell.diff) <= PARAMS_RELATIVE * abs(cell.published)


def compare(ours: dict[str, float], published: dict[str, str], metrics: list[str],
            tolerance: float) -> tuple[dict[str, Cell], str]:
    """Cells per metric and the row's verdict: ✓ when every published, judged metric is within its
    tolerance (`tolerance` points for APs), ✗ when one is not, – when one of ours is missing."""
    cells = {m: Cell(number(published.get(m)), ours.get(m)) for m in metrics}
    judged = {m: c for m, c in cells.items() if c.published is not None and METRICS[m].compare != INFORMATIVE}
    if not judged or any(c.ours is None for c in judged.values()):
        return cells, MISSING
    ok = all(_within(m, c, tolerance) for m, c in judged.items())
    return cells, MATCH if ok else MISMATCH
