"""The AP-per-epoch figure (GRoIE Figs. 2, 4-6), drawn from crafted MMEngine scalars logs: one curve per
row of its plan's first metric, in percent, with the paper's final number starred at the paper's last
epoch; rows with no validation of that metric left out; and its refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.figure import Figure

from sbrrepro.errors import UserError
from sbrrepro.figures import ap_curves, pyplot
from sbrrepro.layout import StudyPaths
from sbrrepro.plan import Plan, load_plan
from sbrrepro.rows import RowConfig
from tests.helpers import DELETE, PLANS, copy_plan, write_scalars

pyplot()  # matplotlib imported once, with the collection


def _write_log(paths: StudyPaths, key: str, lines: list[dict], stamp: str = "20240101_000000") -> None:
    write_scalars(paths.run(key), lines, stamp)


def _val(epoch: int, **metrics: float) -> dict:
    return {**{f"coco/{k}": v for k, v in metrics.items()}, "step": epoch}


def _train(epoch: int) -> dict:
    return {"loss": 1.0, "epoch": epoch, "iter": 1, "step": 10 * epoch, "lr": 0.01}


def _pairs(plan: Plan, *rows: tuple[int, str]) -> list[tuple[Plan, RowConfig]]:
    """(plan, row config) of each (row number, training key)."""
    return [(plan, RowConfig(plan.name, n, plan.row(n).model, plan.row(n).label, Path(f"r{n}.py"), key,
                             Path(f"r{n}.py"), key)) for n, key in rows]


@pytest.fixture(scope="module")
def fig2() -> Plan:
    """GRoIE Fig. 2: bbox AP, 12 epochs; published (Table I) 36.5, 34.8 and 36.8 for rows 1-3."""
    return load_plan(PLANS / "groie" / "fig2.yaml")


@pytest.fixture
def drawn(monkeypatch) -> list[Figure]:
    """The figures ap_curves.draw handed to `save` (which still writes them)."""
    figures: list[Figure] = []
    real = ap_curves.save
    monkeypatch.setattr(ap_curves, "save", lambda fig, out: (figures.append(fig), real(fig, out))[1])
    return figures


def test_curves_and_stars(fig2: Plan, tmp_path: Path, drawn: list[Figure]) -> None:
    paths = StudyPaths(tmp_path / "study")
    # row 1: resumed after epoch 2, whose validation ran again (the newer wins); a training line between
    _write_log(paths, "a-1", [_val(1, bbox_mAP=0.1), _train(2), _val(2, bbox_mAP=0.2)])
    _write_log(paths, "a-1", [_val(2, bbox_mAP=0.22), _val(3, bbox_mAP=0.301, segm_mAP=0.9)], "20240102_000000")
    _write_log(paths, "b-2", [_val(1, bbox_mAP=0.05), _val(2, bbox_mAP=0.15)])
    _write_log(paths, "c-3", [_val(1, segm_mAP=0.2)])  # no bbox AP: left out
    written = ap_curves.draw(paths, _pairs(fig2, (1, "a-1"), (2, "b-2"), (3, "c-3"), (1, "no-run")),
                             tmp_path / "figs" / "fig2")
    assert written == [tmp_path / "figs" / "fig2.png", tmp_path / "figs" / "fig2.pdf"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and written[1].read_bytes()[:5] == b"%PDF-"

    (ax,) = drawn[-1].axes
    curve_a, star_a, curve_b, star_b = ax.lines
    assert [line.get_label() for line in (curve_a, curve_b)] == [fig2.row(1).label, fig2.row(2).label]
    assert list(curve_a.get_xdata()) == [1, 2, 3] and list(curve_a.get_ydata()) == pytest.approx([10.0, 22.0, 30.1])
    assert list(curve_b.get_xdata()) == [1, 2] and list(curve_b.get_ydata()) == pytest.approx([5.0, 15.0])
    assert (list(star_a.get_xdata()), list(star_a.get_ydata())) == ([12], [36.5])
    assert (list(star_b.get_xdata()), list(star_b.get_ydata())) == ([12], [34.8])
    assert star_a.get_marker() == "*" and star_a.get_markerfacecolor() == "none" and star_a.get_linestyle() == "None"
    assert star_a.get_color() == curve_a.get_color() != curve_b.get_color() == star_b.get_color()
    assert ax.get_ylabel() == "B_AP (%)" and ax.get_xlabel() == "epoch"
    assert ax.get_title() == "FPN layer selection, bbox AP per epoch (stars: the paper's final numbers)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [fig2.row(1).label, fig2.row(2).label]


def test_the_plans_metric_and_a_rows_own_schedule(tmp_path: Path, drawn: list[Figure]) -> None:
    """A mask AP figure draws segm AP; a row of 24 epochs has its star at epoch 24."""
    plan = load_plan(copy_plan(tmp_path, "groie/fig6", rows=[5], **{"rows.0.recipe": {"epochs": 24,
                                                                                      "lr_steps": [16, 22]}}))
    paths = StudyPaths(tmp_path / "study")
    _write_log(paths, "m-5", [_val(1, bbox_mAP=0.5, segm_mAP=0.25)])
    ap_curves.draw(paths, _pairs(plan, (5, "m-5")), tmp_path / "fig6")
    (ax,) = drawn[-1].axes
    curve, star = ax.lines
    assert list(curve.get_ydata()) == pytest.approx([25.0]) and ax.get_ylabel() == "S_AP (%)"
    assert (list(star.get_xdata()), list(star.get_ydata())) == ([24], [34.1])


def test_no_star_without_a_published_number(tmp_path: Path, drawn: list[Figure]) -> None:
    plan = load_plan(copy_plan(tmp_path, "groie/fig2", rows=[1], published=DELETE))
    paths = StudyPaths(tmp_path / "study")
    _write_log(paths, "a-1", [_val(1, bbox_mAP=0.1)])
    ap_curves.draw(paths, _pairs(plan, (1, "a-1")), tmp_path / "own")
    assert len(drawn[-1].axes[0].lines) == 1


def test_nothing_validated_yet(fig2: Plan, tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "study")
    _write_log(paths, "a-1", [_train(1), _val(1, segm_mAP=0.1)])
    with pytest.raises(UserError) as e:
        ap_curves.draw(paths, _pairs(fig2, (1, "a-1"), (2, "b-2")), tmp_path / "fig2")
    assert str(e.value) == f"{paths.root}: no validation recorded yet for the figure's rows (see `sbrrepro status`)"
    assert not list(tmp_path.glob("fig2.*"))



@pytest.mark.parametrize("plan", ["sbr-cnn/table1", "sbr-cnn/fig3"])  # # Params; no metric at all
def test_a_plan_whose_first_metric_is_no_ap(plan: str, fig2: Plan, tmp_path: Path) -> None:
    other = load_plan(PLANS / f"{plan}.yaml")
    paths = StudyPaths(tmp_path / "study")
    with pytest.raises(UserError) as e:
        ap_curves.draw(paths, [*_pairs(fig2, (1, "a-1")), *_pairs(other, (1, "x-1"))], tmp_path / "fig")
    assert (e.value.where, e.value.field) == (str(other.path), "metrics")
    assert e.value.message.startswith("an AP-per-epoch figure draws its plan's first metric: a COCO AP")
