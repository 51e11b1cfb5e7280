"""What a study is doing, for people watching a terminal: rows done of rows, and the epoch each
running training has reached (from MMEngine's own log). Plain text: the command decides whether
to redraw it in place (a terminal) or not to show it (a pipe, a log, --json)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from .jobs import AWAITING, DONE, RowState
from .layout import RunPaths
from .results import epoch_losses

_LENGTH = re.compile(r"'max_(epochs|iters)': (\d+)")


def epoch(run: RunPaths, config: Path) -> str | None:
    """'epoch e/E' of a running training: the last epoch its log has reached, of its schedule's."""
    found = _LENGTH.search(config.read_text()) if config.exists() else None
    reached = max(epoch_losses(run), default=None)
    if found is None or found.group(1) != "epochs" or reached is None:
        return None
    return f"epoch {reached}/{found.group(2)}"


def summary(states: list[RowState], epochs: dict[str, str]) -> str:
    """One line: rows done of rows (and runs done of runs, where rows have several seeds), then how
    many runs are in each other state, with the epochs reached."""
    count = Counter(s.state for s in states)
    finished = count[DONE] + count[AWAITING]
    rows: dict[tuple[str, int], list[bool]] = {}
    for s in states:
        rows.setdefault((s.plan, s.row), []).append(s.state in (DONE, AWAITING))
    parts = [f"rows done: {sum(map(all, rows.values()))} of {len(rows)}"
             + (f" (runs: {finished} of {len(states)})" if len(rows) != len(states) else "")]
    parts += [f"{state}: {n}" for state, n in sorted(count.items()) if state not in (DONE, AWAITING)]
    if count[AWAITING]:
        parts.append(f"awaiting server: {count[AWAITING]}")
    running = [f"row {s.row} {epochs[s.key]}" for s in states if s.key in epochs]
    if running:
        parts.append("; ".join(running))
    return " · ".join(parts)


def fit(line: str, width: int) -> str:
    """A line cut to a terminal's width."""
    return line if len(line) <= width else line[:max(width - 1, 0)] + "…"
