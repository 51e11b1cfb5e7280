"""sbrrepro.collect: every verdict from the crafted study's results (several seeds, a missing run, a
failed one, a cited row, a setup other than the paper's, a derived line), and a table plan's lead
columns and caption."""

from __future__ import annotations

from sbrrepro.collect import caption, counted_only, plan_lead
from sbrrepro.plan import load_plan
from sbrrepro.verdicts import CITED, FAILED, NOT_REPRODUCED, OTHER_SETUP, REPRODUCED, RUNNING
from tests.helpers import PLANS


def test_collect_gives_every_verdict_from_crafted_results(crafted):
    plan, _, results = crafted
    got = {r.row.number: r.verdict for r in results}
    assert got == {1: REPRODUCED, 2: NOT_REPRODUCED, 3: FAILED, 4: RUNNING, 5: CITED, 6: OTHER_SETUP,
                   7: OTHER_SETUP, 8: NOT_REPRODUCED}
    one = results[0].table_row
    assert one.seeds == 3 and one.cells["bbox_AP"].ours == 38.2 and one.cells["bbox_AP"].std == 0.2
    assert [run.state.seed for run in results[0].runs] == [0, 1, 2]
    assert len({run.state.key for run in results[0].runs}) == 3, "each seed is a training of its own"
    assert results[5].table_row.marks == ("batch",) and results[6].table_row.marks == ("schedule",)
    derived = results[7].table_row.cells  # row 1 - row 2, ours from ours: 38.2 - 37.0, 34.7 - 35.0
    assert (derived["bbox_AP"].ours, derived["segm_AP"].ours) == (1.2, -0.3)
    cited = results[4].table_row.cells["bbox_AP"]
    assert cited.published == 41.0 and cited.ours is None


def test_a_tables_lead_columns_and_caption_by_what_it_compares():
    """The lead: the published CSV's columns that are no metric. The caption: against the paper (with
    its tolerance), or a baseline row; a table of counts compares at any scale, a trained one not at
    the smoke scale."""
    counts = load_plan(PLANS / "sbr-cnn" / "table1.yaml")  # # Params only: counted, nothing trained
    aps = load_plan(PLANS / "sbr-cnn" / "table11.yaml")
    own = load_plan(PLANS / "examples" / "loss-weights.yaml")  # baseline row 1, nothing published
    assert (counted_only(counts), counted_only(aps), counted_only(own)) == (True, False, False)
    assert plan_lead(aps) == ["method"] and plan_lead(counts) == ["name", "description"] and plan_lead(own) == []
    assert "every |Δ| ≤ 0.5" in caption(aps, "full") and "Smoke scale" not in caption(aps, "full")
    assert caption(aps, "smoke").endswith("Smoke scale: no verdict against the paper.")
    assert caption(counts, "smoke").endswith("Counted on the paper-scale model, without training, whatever the "
                                             "study's scale.")
    assert caption(own, "full").startswith("Ours: computed by sbrrepro; Row 1: the baseline row's; Δ = Ours − Row 1.")
