"""A pure check of our metrics against the published ones, with tolerances (as detectron2's
verify_results): per metric the signed difference, per row a verdict."""

from __future__ import annotations

from dataclasses import dataclass

from .metrics import EXACT, INFORMATIVE, METRICS, PARAMS_RELATIVE, POINTS

MATCH, MISMATCH, MISSING = "✓", "✗", "–"
UNJUDGED = ""  # nothing published that is judged: no verdict from the numbers


@dataclass(frozen=True)
class Cell:
    published: float | None
    ours: float | None  # with several seeds, their mean
    std: float | None = None  # over the seeds, when there are several
    seeds: int = 1  # how many values `ours` is the mean of

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


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (None for one value, which is its own mean)."""
    if len(values) == 1:
        return values[0], None
    mean = sum(values) / len(values)
    return round(mean, 6), round((sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5, 6)


def compare(ours: dict[str, float] | list[dict[str, float]], published: dict[str, str], metrics: list[str],
            tolerance: float) -> tuple[dict[str, Cell], str]:
    """Cells per metric and the row's judgement: ✓ when every published, judged metric is within
    its tolerance (`tolerance` points for APs), ✗ when one is not, – when one of ours is missing,
    UNJUDGED when nothing published is judged.
    `ours`: one run's metrics, or several seeds' (judged on their mean)."""
    runs = ours if isinstance(ours, list) else [ours]
    cells = {}
    for m in metrics:
        values = [run[m] for run in runs if m in run]
        mean, std = mean_std(values) if values else (None, None)
        cells[m] = Cell(number(published.get(m)), mean, std, len(values))
    judged = {m: c for m, c in cells.items() if c.published is not None and METRICS[m].compare != INFORMATIVE}
    if not judged:
        return cells, UNJUDGED
    if any(c.ours is None for c in judged.values()):
        return cells, MISSING
    ok = all(_within(m, c, tolerance) for m, c in judged.items())
    return cells, MATCH if ok else MISMATCH
