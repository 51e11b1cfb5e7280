"""Work done once: identical trainings across rows and plans share one key, and rows that differ
only at test time (SBR-CNN Table 4's evaluation loops) are evaluation-only jobs on that training (which
evaluates the shared checkpoint: tests/unit/test_training.py); sharing saves what they would cost again."""

from __future__ import annotations

import pytest

from tests.helpers import REPO, TABLE3, cli_json

TABLE4 = REPO / "plans" / "sbr-cnn" / "table4.yaml"


@pytest.mark.slow
def test_tables_3_and_4_share_their_trainings(tmp_path, cli):
    listed = cli_json("run", str(TABLE3), str(TABLE4), "--smoke", "--dry-run", "--study", str(tmp_path / "s"))
    rows = {(r["plan"], r["row"]): r for r in listed}
    t3, t4 = "sbr-cnn/table3", "sbr-cnn/table4"
    assert rows[(t3, 1)]["key"] == rows[(t4, 1)]["key"]  # the same Mask R-CNN
    trained = rows[(t3, 4)]["key"]  # R^3-CNN L_t = 3
    assert rows[(t4, 4)]["key"] == trained and not rows[(t4, 4)]["eval_only"]
    for n in (2, 3, 5, 6):
        assert rows[(t4, n)]["eval_only"] and rows[(t4, n)]["train_key"] == trained
    assert len({r["key"] for r in rows.values()}) == 9  # 5 trainings + 4 evaluations for 11 rows
    text = cli("run", str(TABLE3), str(TABLE4), "--smoke", "--dry-run",
               "--study", str(tmp_path / "s")).stdout
    assert "11 row(s), 5 unique training(s), 4 evaluation-only job(s); would submit 9 job(s)" in text


def test_sharing_saves_what_the_shared_trainings_would_cost_again(tmp_path):
    """Tables 3 and 4 together: the Mask R-CNN (twice) and the 3-loop R^3-CNN (once in Table 3,
    five times in Table 4) are trained once each."""
    from sbrrepro.config_files import write_configs
    from sbrrepro.configs import full_scale
    from sbrrepro.costs import paper_estimate, summarize
    from sbrrepro.layout import StudyPaths
    from sbrrepro.plan import load_plan

    rows, paths = [], StudyPaths(tmp_path)
    for path in (TABLE3, TABLE4):
        plan = load_plan(path)
        rows += zip(plan.model_rows, write_configs(plan, full_scale(tmp_path / "coco"), paths))
    s, _ = summarize(rows, paths, "full")
    assert (s.rows, s.trainings, s.evaluations) == (11, 5, 4)
    mask, r3_three_loops = paper_estimate(rows[0][0]), paper_estimate(rows[3][0])
    assert s.hours_one_per_row - s.hours == pytest.approx(mask + 5 * r3_three_loops)
    assert s.hours == pytest.approx(sum(paper_estimate(r) for r, _ in rows[:5]))
