"""SBR-CNN Fig. 3, drawn from crafted histogram files as trainings record them: per row a panel of its
training's IoU counts of one population summed over the epochs, one histogram per series labelled as
the row's model names it; the caption of each population; and the refusals (no rows, nothing recorded
yet, a damaged file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from sbrrepro.errors import UserError
from sbrrepro.figures import iou_histograms, pyplot
from sbrrepro.figures.iou_histograms import POPULATIONS, Panel, caption, panels
from sbrrepro.layout import StudyPaths
from sbrrepro.plan import Plan, load_plan
from sbrrepro.rows import RowConfig
from tests.helpers import PLANS

pyplot()  # matplotlib imported once, with the collection
EDGES = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


@pytest.fixture(scope="module")
def fig3() -> Plan:
    """Row 1: Mask R-CNN (one R-CNN stage); row 2: R^3-CNN, 3 loops at IoU 0.5, 0.6, 0.7."""
    return load_plan(PLANS / "sbr-cnn" / "fig3.yaml")


def _pairs(plan: Plan, *rows: tuple[int, str]) -> list[tuple[Plan, RowConfig]]:
    return [(plan, RowConfig(plan.name, n, plan.row(n).model, plan.row(n).label, Path(f"r{n}.py"), key,
                             Path(f"r{n}.py"), key)) for n, key in rows]


def _record(paths: StudyPaths, key: str, data: dict) -> None:
    path = paths.run(key).histograms
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def study(tmp_path: Path) -> StudyPaths:
    paths = StudyPaths(tmp_path / "study")
    _record(paths, "mask-1", {
        "proposals": {"bin_edges": EDGES, "epochs": {"1": {"rcnn": [9, 7, 5, 3, 1]}, "2": {"rcnn": [8, 6, 4, 2, 0]}}},
        "positives": {"bin_edges": EDGES, "epochs": {"1": {"rcnn": [4, 3, 2, 1, 1]}}}})
    _record(paths, "r3-2", {
        "proposals": {"bin_edges": EDGES, "epochs": {
            "1": {"loop2": [1, 1, 1, 1, 1], "loop1": [5, 4, 3, 2, 1], "loop3": [0, 0, 1, 2, 3], "extra": [1] * 5},
            "2": {"loop1": [1, 1, 1, 1, 1], "loop2": [2, 2, 2, 2, 2], "loop3": [3, 3, 3, 3, 3], "extra": [1] * 5}}},
        "positives": {"bin_edges": EDGES, "epochs": {}}})
    return paths


@pytest.fixture
def drawn(monkeypatch) -> list[Figure]:
    """The figures iou_histograms.draw handed to `save` (which still writes them)."""
    figures: list[Figure] = []
    real = iou_histograms.save
    monkeypatch.setattr(iou_histograms, "save", lambda fig, out: (figures.append(fig), real(fig, out))[1])
    return figures


def test_captions() -> None:
    assert caption() == caption("proposals") == "IoU distribution of the proposals at the assigner"
    assert caption("positives") == "IoU distribution of the positive training RoIs"
    assert set(POPULATIONS) == {"proposals", "positives"} and iou_histograms.POPULATION == "proposals"


def test_panels_sum_the_epochs_and_label_the_series(study: StudyPaths, fig3: Plan) -> None:
    found = panels(study, _pairs(fig3, (1, "mask-1"), (2, "r3-2")), "proposals")
    assert found == [
        Panel("(a) Mask R-CNN (sbr-cnn/fig3 row 1)", EDGES, {"R-CNN (IoU ≥ 0.5)": [17, 13, 9, 5, 1]}),
        Panel("(b) R$^3$-CNN (sbr-cnn/fig3 row 2)", EDGES, {
            "extra": [2] * 5,  # a series the model does not name keeps its own name
            "loop 1 (IoU ≥ 0.5)": [6, 5, 4, 3, 2], "loop 2 (IoU ≥ 0.6)": [3] * 5,
            "loop 3 (IoU ≥ 0.7)": [3, 3, 4, 5, 6]}),
    ]
    assert list(found[1].series) == ["extra", "loop 1 (IoU ≥ 0.5)", "loop 2 (IoU ≥ 0.6)", "loop 3 (IoU ≥ 0.7)"]


def test_positives_and_a_file_of_before_populations(study: StudyPaths, fig3: Plan) -> None:
    """A file written before populations holds the positives alone; no epoch recorded: no series."""
    (panel,) = panels(study, _pairs(fig3, (1, "mask-1")), "positives")
    assert panel.series == {"R-CNN (IoU ≥ 0.5)": [4, 3, 2, 1, 1]}
    _record(study, "old-1", {"bin_edges": EDGES, "epochs": {"3": {"rcnn": [1, 2, 3, 4, 5]}}})
    (panel,) = panels(study, _pairs(fig3, (1, "old-1")), "positives")
    assert panel.series == {"R-CNN (IoU ≥ 0.5)": [1, 2, 3, 4, 5]}
    assert panels(study, _pairs(fig3, (2, "r3-2")), "positives")[0].series == {}
    with pytest.raises(UserError, match="no IoU histograms yet for sbr-cnn/fig3 row 1"):
        panels(study, _pairs(fig3, (1, "old-1")), "proposals")


def test_draw_one_panel_per_row(study: StudyPaths, fig3: Plan, tmp_path: Path, drawn: list[Figure]) -> None:
    written = iou_histograms.draw(study, _pairs(fig3, (1, "mask-1"), (2, "r3-2")), tmp_path / "figs" / "fig3")
    assert written == [tmp_path / "figs" / "fig3.png", tmp_path / "figs" / "fig3.pdf"]
    assert all(p.stat().st_size > 0 for p in written)
    fig = drawn[-1]
    assert fig.get_suptitle() == "IoU distribution of the proposals at the assigner"
    mask, r3 = fig.axes
    assert [mask.get_title(), r3.get_title()] == ["(a) Mask R-CNN (sbr-cnn/fig3 row 1)",
                                                  "(b) R$^3$-CNN (sbr-cnn/fig3 row 2)"]
    assert [p.get_height() for p in mask.patches] == [17, 13, 9, 5, 1]
    assert [p.get_x() for p in mask.patches] == pytest.approx(EDGES[:-1])
    assert [p.get_width() for p in mask.patches] == pytest.approx([0.1] * 5)
    # four series side by side in each bin: a quarter of the bin each, the k-th shifted by k quarters
    assert len(r3.patches) == 20 and [p.get_width() for p in r3.patches] == pytest.approx([0.025] * 20)
    loop1 = r3.patches[5:10]
    assert [p.get_height() for p in loop1] == [6, 5, 4, 3, 2]
    assert [p.get_x() for p in loop1] == pytest.approx([e + 0.025 for e in EDGES[:-1]])
    assert [t.get_text() for t in r3.get_legend().get_texts()] == ["extra", "loop 1 (IoU ≥ 0.5)",
                                                                    "loop 2 (IoU ≥ 0.6)", "loop 3 (IoU ≥ 0.7)"]
    assert mask.get_xlim() == pytest.approx((0.5, 1.0)) and list(mask.get_xticks()) == pytest.approx(EDGES)
    assert (mask.get_xlabel(), mask.get_ylabel()) == ("IoU with the best ground truth", "proposals at the assigner")


def test_draw_the_positives(study: StudyPaths, fig3: Plan, tmp_path: Path, drawn: list[Figure]) -> None:
    iou_histograms.draw(study, _pairs(fig3, (1, "mask-1")), tmp_path / "fig3", "positives")
    (ax,) = drawn[-1].axes
    assert drawn[-1].get_suptitle() == "IoU distribution of the positive training RoIs"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("IoU with the matched ground truth", "positive training RoIs")
    assert [p.get_height() for p in ax.patches] == [4, 3, 2, 1, 1]


def test_nothing_recorded_yet(study: StudyPaths, fig3: Plan, tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        iou_histograms.draw(study, _pairs(fig3, (1, "mask-1"), (2, "not-yet")), tmp_path / "fig3")
    assert str(e.value) == (f"{study.run('not-yet').root}: no IoU histograms yet for sbr-cnn/fig3 row 2; they are "
                            "written at each epoch's end of its training (see `sbrrepro status`)")
    assert not list(tmp_path.glob("fig3.*"))



@pytest.mark.parametrize("data, field", [
    ({"proposals": {"bin_edges": EDGES, "epochs": {"1": {"rcnn": [1, -2, 3, 4, 5]}}}}, "proposals.epochs.1.rcnn.1"),
    ({"proposals": {"bin_edges": EDGES}}, "proposals.epochs"),
    ({"proposals": {"bin_edges": "0.5..1", "epochs": {}}}, "proposals.bin_edges"),
])
def test_damaged_file(study: StudyPaths, fig3: Plan, data: dict, field: str) -> None:
    _record(study, "bad-1", data)
    with pytest.raises(UserError) as e:
        panels(study, _pairs(fig3, (1, "bad-1")), "proposals")
    assert (e.value.where, e.value.field) == (str(study.run("bad-1").histograms), field)
    assert e.value.message.endswith("delete it: a training records them again at each epoch's end")
