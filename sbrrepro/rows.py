"""The record of one plan row as it flows down the stages: its kind, decided once when its plan is
loaded, and its config on disk with the key of what it runs.

Plain data with no imports of the config builder, the plans or the data: the state store, the jobs,
the server, the costs, speed and the figures read rows through this module alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# What a row is. TRAINED: a training (and its evaluation) runs for it. COUNTED: its numbers are counted
# on the built model or computed from annotations, no job. CITED: another paper's published result.
# DERIVED: computed from two other rows of its plan (row a minus row b).
TRAINED, COUNTED, CITED, DERIVED = "trained", "counted", "cited", "derived"
KINDS = (TRAINED, COUNTED, CITED, DERIVED)

# A trained row's state, in the order it goes through them (see sbrrepro.jobs). AWAITING: its evaluation
# wrote the files for COCO's evaluation server; it is done once their stats are imported. CANCELLED:
# stopped by `cancel`, submitted again by `run`.
NEW, PENDING, RUNNING, AWAITING, DONE, FAILED, CANCELLED = (
    "new", "pending", "running", "awaiting server", "done", "failed", "cancelled")


@dataclass(frozen=True)
class RowConfig:
    """One row's config on disk. `key` identifies what the row runs (<model>-<hash>); `train_key`
    the training it needs. They differ for an evaluation-only row, which evaluates the training of
    `train_path` with its own test-time settings."""

    plan: str
    row: int
    model: str
    label: str
    path: Path
    key: str
    train_path: Path
    train_key: str
    seed: int = 0  # MMEngine's seed of the training: a row with several seeds has one RowConfig per seed
    kind: str = TRAINED  # TRAINED or COUNTED: the rows with a model

    @property
    def eval_only(self) -> bool:
        return self.key != self.train_key


def trained(rows: list[tuple[str, RowConfig]]) -> list[RowConfig]:
    """The row configs of (plan file, row config) pairs that run jobs."""
    return [rc for _, rc in rows if rc.kind == TRAINED]
