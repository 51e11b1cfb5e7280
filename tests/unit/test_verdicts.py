"""sbrrepro.verdicts: every verdict from a row's states, its judgement and how its runs were made,
each a symbol and a word of its own, and the footnotes that say how a run's setup differs."""

from __future__ import annotations

import pytest

from sbrrepro.verdicts import (
    CITED,
    COUNTED,
    FAILED,
    FOOTNOTES,
    NOT_REPRODUCED,
    NOT_RUN,
    OTHER_DATA,
    OTHER_SETUP,
    OWN,
    REPRODUCED,
    RUNNING,
    SMOKE,
    VERDICTS,
    Judged,
    footnote,
    verdict,
)
from sbrrepro.verify import MATCH, MISMATCH, MISSING, UNJUDGED


@pytest.mark.parametrize(("judged", "expected"), [
    (Judged("cited", (), UNJUDGED, True), CITED),
    (Judged("trained", ("done", "failed"), MATCH, True), FAILED),
    (Judged("trained", ("done", "running"), MATCH, True), RUNNING),
    (Judged("trained", ("awaiting server",), MATCH, True), RUNNING),
    (Judged("trained", ("new",), MISSING, True), NOT_RUN),
    (Judged("trained", ("cancelled",), MISSING, True), NOT_RUN),
    (Judged("trained", ("done",), MATCH, True), REPRODUCED),
    (Judged("trained", ("done",), MISMATCH, True), NOT_REPRODUCED),
    (Judged("trained", ("done",), MISSING, True), NOT_REPRODUCED),  # nothing detected
    (Judged("trained", ("done",), MATCH, True, ("batch",)), OTHER_SETUP),
    (Judged("trained", ("done",), MISMATCH, True, ("schedule",)), NOT_REPRODUCED),
    (Judged("trained", ("done",), MATCH, True, ("schedule", "smoke")), SMOKE),
    (Judged("trained", ("done",), MATCH, True, ("dataset",)), OTHER_DATA),
    (Judged("counted", (), MATCH, True, ("smoke",), scale_free=True), REPRODUCED),
    (Judged("counted", (), UNJUDGED, True), COUNTED),
    (Judged("trained", ("done",), MATCH, False), OWN),
    (Judged("derived", ("done", "done"), MATCH, True), REPRODUCED),
    (Judged("derived", ("done", "new"), MISSING, True), NOT_RUN),
])
def test_every_verdict(judged, expected):
    assert verdict(judged) == expected


def test_verdicts_are_a_symbol_and_a_word_each_its_own():
    assert len({v.symbol for v in VERDICTS}) == len({v.word for v in VERDICTS}) == len(VERDICTS)


def test_a_footnote_names_the_dataset_the_study_trained_on():
    """The smoke scale's names the embedded dataset as such, a dataset profile by its name; the others
    are as FOOTNOTES has them, each mark its own."""
    assert footnote("smoke", "shapes") == ("¶", "smoke scale: sbrrepro's small synthetic dataset (shapes) and a "
                                                "ResNet-18, so ours is not comparable with the paper")
    assert footnote("smoke", "mydata")[1].startswith("smoke scale: the dataset mydata and a ResNet-18")
    assert footnote("batch", "mydata") == FOOTNOTES["batch"]
    assert len({mark for mark, _ in FOOTNOTES.values()}) == len(FOOTNOTES)
