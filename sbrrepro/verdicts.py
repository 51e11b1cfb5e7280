"""A row's verdict from its state, its cells' judgement and how its runs were made: a symbol and a
word (never colour alone), the number of seeds, and footnote marks for every way its setup differs
from the paper's. Pure: plain data in, a `Verdict` out.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import rows
from .datasets import built_in
from .verify import MATCH, UNJUDGED


@dataclass(frozen=True)
class Verdict:
    symbol: str
    word: str


REPRODUCED = Verdict("✓", "reproduced")
NOT_REPRODUCED = Verdict("✗", "not reproduced")
OTHER_SETUP = Verdict("≈", "within tolerance, other setup")  # never "reproduced": see the footnotes
NOT_RUN = Verdict("○", "not run")
RUNNING = Verdict("…", "running")
FAILED = Verdict("!", "failed")
CITED = Verdict("»", "cited")  # another paper's published result, shown, not reproduced
SMOKE = Verdict("~", "smoke")  # real numbers of the smoke scale's small models: not comparable with the paper
COUNTED = Verdict("#", "counted")  # counted or computed, with nothing published to judge it against
OTHER_DATA = Verdict("≠", "other data")  # the user's dataset: real numbers, not the paper's experiment
OWN = Verdict("·", "own")  # a study of your own: nothing published, every row against its baseline row
VERDICTS = (REPRODUCED, NOT_REPRODUCED, OTHER_SETUP, NOT_RUN, RUNNING, FAILED, CITED, SMOKE, COUNTED, OTHER_DATA,
            OWN)

# How a run's setup may differ from the paper's: the footnote mark and its text (`footnote` fills in
# the {data} that the smoke scale's names).
FOOTNOTES = {
    "batch": ("†", "trained on another number of GPUs or with another total batch than the paper's (the lr "
                   "scaled linearly with the batch; an iteration schedule's iterations inversely, so it sees "
                   "the paper's images)"),
    "schedule": ("‡", "trained for another number of epochs than the paper's schedule (lr steps scaled alike)"),
    "framework": ("‖", "built with another MMDetection's model settings than those of the one the paper's numbers "
                       "came from (`run --framework`)"),
    "dataset": ("§", "trained and evaluated on another dataset than the paper's"),
    "smoke": ("¶", "smoke scale: {data} and a ResNet-18, so ours is not comparable with the paper"),
}


def footnote(key: str, dataset: str) -> tuple[str, str]:
    """A FOOTNOTES entry as a table prints it; the smoke scale's names the dataset the study trained
    on (`Study.dataset`: the embedded one, or a dataset profile's name)."""
    mark, text = FOOTNOTES[key]
    embedded = dataset == built_in(smoke=True)
    return mark, text.format(data=f"sbrrepro's small synthetic dataset ({dataset})" if embedded else
                             f"the dataset {dataset}")


# Row states (those of `jobs`, and the rows that run nothing) as far as a verdict is concerned.
RUNNING_STATES = (rows.PENDING, rows.RUNNING, rows.AWAITING)


@dataclass(frozen=True)
class Judged:
    """What a verdict is made from, for one row (all of its seeds)."""

    kind: str  # one of sbrrepro.rows.KINDS
    states: tuple[str, ...]  # each seed's state (a derived line: those of the rows it is computed from)
    judgement: str  # verify.compare's: MATCH, MISMATCH, MISSING or UNJUDGED
    published: bool  # the plan has published numbers (not a study of your own)
    differences: tuple[str, ...] = ()  # FOOTNOTES keys
    scale_free: bool = False  # counted on the paper-scale model: comparable at any scale and on any data


def verdict(j: Judged) -> Verdict:
    if j.kind == rows.CITED:
        return CITED
    if j.kind != rows.COUNTED:
        if rows.FAILED in j.states:
            return FAILED
        if any(s in RUNNING_STATES for s in j.states):
            return RUNNING
        if any(s != rows.DONE for s in j.states):
            return NOT_RUN
    if not j.published:
        return OWN
    if j.judgement == UNJUDGED:  # ours shown, nothing published to judge it against
        return COUNTED
    differences = () if j.scale_free else j.differences
    if "smoke" in differences:
        return SMOKE
    if "dataset" in differences:
        return OTHER_DATA
    if j.judgement != MATCH:  # outside the tolerance, or a published number without ours (nothing detected)
        return NOT_REPRODUCED
    return OTHER_SETUP if differences else REPRODUCED
