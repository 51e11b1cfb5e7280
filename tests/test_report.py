"""The pure pieces: metric conversion, verdicts and the three renderers of one table model."""

from __future__ import annotations

from sbrrepro.metrics import from_coco
from sbrrepro.report import Table, to_latex, to_markdown, to_terminal
from sbrrepro.verify import MATCH, MISMATCH, MISSING, compare


def test_coco_fractions_become_the_papers_percent():
    got = from_coco({"coco/bbox_mAP": 0.4089, "coco/segm_mAP": 0.372, "coco/bbox_mAP_s": -1.0})
    assert got == {"bbox_AP": 40.9, "segm_AP": 37.2}  # -1 (no small objects) is not a number to show


def test_verdicts_use_the_tolerance():
    published = {"bbox_AP": "40.9", "segm_AP": "37.2"}
    cells, verdict = compare({"bbox_AP": 41.3, "segm_AP": 36.8}, published, ["bbox_AP", "segm_AP"], 0.5)
    assert verdict == MATCH
    assert cells["bbox_AP"].diff == 0.4 and cells["segm_AP"].diff == -0.4
    assert compare({"bbox_AP": 41.5, "segm_AP": 37.2}, published, ["bbox_AP", "segm_AP"], 0.5)[1] == MISMATCH
    assert compare({"bbox_AP": 40.9}, published, ["bbox_AP", "segm_AP"], 0.5)[1] == MISSING
    # a metric the paper did not print is shown but not judged
    cells, verdict = compare({"bbox_AP": 40.9, "mem_GB": 4.0}, {"bbox_AP": "40.9", "mem_GB": ""},
                             ["bbox_AP", "mem_GB"], 0.5)
    assert verdict == MATCH and cells["mem_GB"].published is None


def _table() -> Table:
    cells, verdict = compare({"bbox_AP": 40.5, "segm_AP": 37.9}, {"bbox_AP": "40.9", "segm_AP": "37.2"},
                             ["bbox_AP", "segm_AP"], 0.5)
    return Table("sbr-cnn table3: loops", "Δ = Ours − Paper; ✓ when |Δ| ≤ 0.5; † scaled lr.", ["#", "model"],
                 ["bbox_AP", "segm_AP"],
                 [(["4", "R^3-CNN"], cells, verdict)])


def test_markdown_shows_paper_ours_and_signed_difference():
    md = to_markdown(_table())
    assert "| # | model | B_AP Paper | B_AP Ours | B_AP Δ | S_AP Paper | S_AP Ours | S_AP Δ | Verdict |" in md
    assert "| 4 | R^3-CNN | 40.9 | 40.5 | -0.4 | 37.2 | 37.9 | +0.7 | ✗ |" in md


def test_latex_is_escaped_and_grouped():
    tex = to_latex(_table())
    assert r"\multicolumn{3}{c}{B\_AP}" in tex
    assert r"4 & R$^{3}$-CNN & 40.9 & 40.5 & -0.4 & 37.2 & 37.9 & +0.7 & $\times$ \\" in tex
    assert tex.count(r"\cmidrule") == 2 and r"\toprule" in tex and r"\bottomrule" in tex
    assert not any(ord(c) > 127 for c in tex), "plain ASCII, for pdflatex without unicode packages"
    # the caption's dagger stays a superscript: no ^ escaped inside math mode, which pdflatex refuses
    assert r"$^\dagger$" in tex and r"\textasciicircum{}\dagger" not in tex


def test_terminal_aligns_columns():
    lines = to_terminal(_table()).splitlines()
    assert lines[1].split()[:3] == ["#", "model", "B_AP"]
    assert lines[2].split() == ["4", "R^3-CNN", "40.9", "40.5", "-0.4", "37.2", "37.9", "+0.7", "✗"]
