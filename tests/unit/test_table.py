"""sbrrepro.table: the one table model every renderer draws: the crafted study's table (every cell of
the four renderers, the best and second best of our columns, the footnotes), the paper's column
groups, the smoke footnote's dataset, and the model's own pieces on plain rows."""

from __future__ import annotations

import pytest

from sbrrepro.collect import table_of
from sbrrepro.plan import load_plan
from sbrrepro.render import to_html, to_latex, to_markdown, to_terminal
from sbrrepro.table import BEST, SECOND, Table, TableRow
from sbrrepro.verdicts import CITED, OTHER_SETUP, OWN
from sbrrepro.verify import Cell
from tests.helpers import REPO, crafted_study, finish_run


def _rows(text: str) -> dict[str, list[str]]:
    return {cells[0]: cells for line in text.splitlines()
            if line.startswith("| ") and (cells := [c.strip() for c in line.strip("|").split("|")])[0].isdigit()}


def test_every_rendered_cell_of_the_crafted_table(crafted):
    plan, _, results = crafted
    table = table_of(plan, results, "full", "coco2017")
    md = _rows(to_markdown(table))
    assert md["1"] == ["1", "Mask", "38.2", "38.2 ± 0.2", "+0.0", "34.7", "34.7 ± 0.2", "+0.0",
                       "✓ reproduced (3 seeds)"]
    assert md["2"] == ["2", "Naive", "38.0", "37.0", "-1.0", "35.0", "35.0", "+0.0", "✗ not reproduced"]
    assert md["3"] == ["3", "R2", "40.4", "–", "–", "36.7", "–", "–", "! failed"]
    assert md["4"] == ["4", "R3", "40.9", "–", "–", "37.2", "–", "–", "… running"]
    assert md["5"] == ["5", "Other", "41.0", "–", "–", "37.0", "–", "–", "» cited"]
    # best (bold) and second best (underlined) of our columns: derived and cited lines take no part
    assert md["6"] == ["6", "R4", "40.9", "**41.0**", "+0.1", "37.4", "**37.3**", "-0.1",
                       "≈ within tolerance, other setup†"]
    assert md["7"] == ["7", "Mask 2x", "39.0", "<u>39.1</u>", "+0.1", "35.5", "<u>35.5</u>", "+0.0",
                       "≈ within tolerance, other setup‡"]
    assert md["8"] == ["8", "Improvement", "0.2", "1.2", "+1.0", "-0.3", "-0.3", "+0.0", "✗ not reproduced"]
    assert table.ranks[(5, "bbox_AP")] == BEST and table.ranks[(6, "bbox_AP")] == SECOND
    text = to_markdown(table)
    assert "† trained on another number of GPUs or with another total batch" in text
    assert "‡ trained for another number of epochs" in text
    assert "Row 5: cited (Other et al. 2020)" in text and "Row 8: row 1 − row 2" in text

    html = to_html(table)
    assert html.count("<tr class=") == 8 and "<b>41.0</b>" in html and "<u>39.1</u>" in html
    assert "38.2 ± 0.2" in html and "✓ reproduced (3 seeds)" in html and 'class="v-failed"' in html

    latex = to_latex(table)
    assert r"\textbf{41.0}" in latex and r"\underline{39.1}" in latex
    assert r"38.2 $\pm$ 0.2" in latex and r"\checkmark{} reproduced (3 seeds)" in latex
    assert "within tolerance, other setup$^\\dagger$" in latex
    assert not any(ord(c) > 127 for c in latex), "plain ASCII, for pdflatex without unicode packages"

    term = to_terminal(table).splitlines()
    assert term[1].split()[:3] == ["#", "method", "B_AP"]
    assert term[2].split() == ["1", "Mask", "38.2", "38.2", "±", "0.2", "+0.0", "34.7", "34.7", "±", "0.2", "+0.0",
                               "✓", "reproduced", "(3", "seeds)"]


def test_paper_column_groups_in_latex_and_html(crafted):
    """Table 11's layout: the bounding box and mask groups over their APs."""
    plan = load_plan(REPO / "plans" / "sbr-cnn" / "table11.yaml")
    table = table_of(plan, [], "full", "coco2017")
    assert [(g, len(ms)) for g, ms in table.groups] == [("Bounding box", 6), ("Mask", 6)]
    latex = to_latex(table)  # twelve metrics: each row on two lines, the paper's then ours (Δ)
    assert r"\multicolumn{6}{c}{Bounding box} & \multicolumn{6}{c}{Mask}" in latex
    assert r"\multicolumn{1}{c}{AP50}" in latex and latex.count(r"\cmidrule") == 2
    html = to_html(table)
    assert '<th colspan="6" class="group">Bounding box</th>' in html and '<th colspan="1">APs</th>' in html


@pytest.mark.parametrize(("dataset", "named"), [(None, "sbrrepro's small synthetic dataset (shapes)"),
                                                ("mydata", "the dataset mydata")])
def test_the_smoke_footnote_names_the_studys_dataset(tmp_path, dataset, named):
    """At smoke scale the ¶ footnote names what the study trained on: the embedded dataset, or the
    dataset profile given with --dataset (which also gets §)."""
    from sbrrepro.collect import collect

    plan, study, written = crafted_study(tmp_path, scale="smoke", dataset=dataset)
    finish_run(study, next(rc.key for rc in written if rc.row == 2), 0.05, 0.04)
    collect(study)
    md = study.paths.report(plan.name, ".md").read_text()
    assert f"¶ smoke scale: {named} and a ResNet-18, so ours is not comparable with the paper." in md
    assert ("§ trained and evaluated on another dataset than the paper's." in md) == (dataset is not None)
    assert _rows(md)["2"][-1] == ("~ smoke¶" if dataset is None else "~ smoke§¶")


def test_ranks_follow_each_metrics_direction_among_the_ranked_rows_as_printed():
    """Higher AP is better, a lower test time; a count (params) is never ranked, nor a column with one
    value; values that print alike rank alike; an unranked row (cited) takes no part."""
    def row(n: str, ap: float, time_s: float, params: int, verdict=OWN, ranked=True) -> TableRow:
        cells = {"bbox_AP": Cell(None, ap), "test_time_s": Cell(None, time_s), "params": Cell(None, params),
                 "segm_AP": Cell(None, 37.0 if n == "1" else None)}
        return TableRow([n], cells, verdict, ranked=ranked)

    rows = [row("1", 40.04, 0.1, 10), row("2", 39.96, 0.2, 20), row("3", 39.0, 0.3, 30),
            row("4", 50.0, 0.01, 1, CITED, ranked=False)]
    table = Table("t", "c", ["#"], ["bbox_AP", "test_time_s", "params", "segm_AP"], rows, "coco2017")
    assert table.ranks == {(0, "bbox_AP"): BEST, (1, "bbox_AP"): BEST, (2, "bbox_AP"): SECOND,
                           (0, "test_time_s"): BEST, (1, "test_time_s"): SECOND}


def test_a_rows_verdict_text_groups_and_footnotes_in_their_order():
    row = TableRow(["1", "Mask"], {"bbox_AP": Cell(40.0, 40.2, 0.1, 3), "bbox_AP50": Cell(60.0, None),
                                   "segm_AP": Cell(37.0, 37.1, 0.1, 3), "params": Cell(None, None)},
                   OTHER_SETUP, marks=("schedule", "batch"))
    assert row.seeds == 3 and row.verdict_text() == "≈ within tolerance, other setup (3 seeds)‡†"
    assert TableRow(["2"], {"bbox_AP": Cell(40.0, None)}, OWN).seeds == 1
    table = Table("t", "c", ["#", "method"], ["bbox_AP", "bbox_AP50", "segm_AP", "params"], [row], "shapes")
    assert table.groups == [("Bounding box", ["bbox_AP", "bbox_AP50"]), (None, ["segm_AP"]), (None, ["params"])]
    assert [mark for mark, _ in table.footnotes] == ["†", "‡"], "FOOTNOTES' order, not the row's"
