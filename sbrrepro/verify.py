"""A pure check of our metrics against the published ones, with a tolerance (as detectron2's
verify_results): per metric the signed difference, per row a verdict."""

from __future__ import annotations

from dataclasses import dataclass

MATCH, MISMATCH, MISSING = "✓", "✗", "–"


@dataclass(frozen=True)
class Cell:
    published: float | None
    ours: float | None

    @property
    def diff(self) -> float | None:
        if self.published is None or self.ours is None:
            return None
        return round(self.ours - self.published, 1)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def compare(ours: dict[str, float], published: dict[str, str], metrics: list[str],
            tolerance: float) -> tuple[dict[str, Cell], str]:
    """Cells per metric and the row's verdict: ✓ when every published metric is within `tolerance`,
    ✗ when one is not, – when one of ours is missing."""
    cells = {m: Cell(_number(published.get(m)), ours.get(m)) for m in metrics}
    compared = [c for c in cells.values() if c.published is not None]
    if not compared or any(c.ours is None for c in compared):
        return cells, MISSING
    ok = all(abs(c.diff) <= tolerance + 1e-9 for c in compared)
    return cells, MATCH if ok else MISMATCH
