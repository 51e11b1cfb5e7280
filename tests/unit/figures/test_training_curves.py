"""The training-curves figure and the per-epoch losses it draws, on crafted MMEngine scalars logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbrrepro.errors import UserError
from sbrrepro.figures import training_curves
from sbrrepro.layout import StudyPaths
from sbrrepro.results import epoch_losses
from sbrrepro.rows import RowConfig
from tests.helpers import write_scalars


def _write_log(paths: StudyPaths, key: str, stamp: str, lines: list[dict]) -> None:
    write_scalars(paths.run(key), lines, stamp, tail='{"loss": 9')  # its last line cut by a kill


def _train(epoch: int, *losses: float) -> list[dict]:
    return [{"loss": loss, "epoch": epoch, "iter": i, "step": i, "lr": 0.01} for i, loss in enumerate(losses, 1)]


def _val(epoch: int, bbox: float, segm: float) -> dict:
    return {"coco/bbox_mAP": bbox, "coco/segm_mAP": segm, "coco/bbox_mAP_50": 0.5, "step": epoch}


def _row(number: int, label: str, key: str) -> RowConfig:
    return RowConfig("test/plan", number, "mask_rcnn", label, Path("row.py"), key, Path("train.py"), key)


@pytest.fixture
def study(tmp_path: Path) -> StudyPaths:
    paths = StudyPaths(tmp_path / "study")
    # Row 1: three epochs; cut in epoch 2 and resumed, the second start logs epoch 2 again.
    _write_log(paths, "a-1", "20240101_000000", [*_train(1, 4.0, 2.0), _val(1, 0.10, 0.08), *_train(2, 9.0)])
    _write_log(paths, "a-1", "20240102_000000", [*_train(2, 1.5, 0.5), _val(2, 0.20, 0.15),
                                                 *_train(3, 0.6, 0.4), _val(3, 0.25, -1)])
    # Row 2: two epochs, plus an iteration-logged line without an epoch (skipped).
    _write_log(paths, "b-2", "20240101_000000", [*_train(1, 3.0, 1.0), {"loss": 100.0, "iter": 7, "step": 7},
                                                 _val(1, 0.05, 0.04), *_train(2, 1.0), _val(2, 0.12, 0.1)])
    return paths


@pytest.fixture
def drawn(monkeypatch):
    """training_curves.draw, returning the figure it drew (as `save` got it) and the files it wrote."""
    figures = []
    real_save = training_curves.save
    monkeypatch.setattr(training_curves, "save", lambda fig, out: (figures.append(fig), real_save(fig, out))[1])

    def draw(paths: StudyPaths, rows: list, out: Path) -> tuple:
        written = training_curves.draw(paths, rows, out)
        return figures[-1], written

    return draw


def test_epoch_losses_means_and_resume(study: StudyPaths) -> None:
    assert epoch_losses(study.run("a-1")) == pytest.approx({1: 3.0, 2: 1.0, 3: 0.5})  # not 9.0 in epoch 2
    assert epoch_losses(study.run("b-2")) == pytest.approx({1: 2.0, 2: 1.0})
    assert epoch_losses(study.run("nothing")) == {}


def test_draw_two_panels(study: StudyPaths, tmp_path: Path, drawn) -> None:
    rows = [("p.yaml", _row(1, "A", "a-1")), ("p.yaml", _row(2, "B", "b-2")),
            ("p.yaml", _row(3, "A again", "a-1")),  # shares row 1's training: drawn once
            ("p.yaml", _row(4, "not started", "c-3"))]  # nothing recorded: left out
    fig, written = drawn(study, rows, tmp_path / "figs" / "curves")
    assert [p.suffix for p in written] == [".png", ".pdf"]
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    loss_ax, ap_ax = fig.axes
    assert loss_ax.get_title() == "training loss" and ap_ax.get_title() == "validation AP (%)"
    assert [line.get_label() for line in loss_ax.lines] == ["row 1: A", "row 2: B"]
    assert list(loss_ax.lines[0].get_ydata()) == pytest.approx([3.0, 1.0, 0.5])
    assert list(loss_ax.lines[1].get_ydata()) == pytest.approx([2.0, 1.0])
    assert [list(line.get_xdata()) for line in loss_ax.lines] == [[1, 2, 3], [1, 2]]
    # bbox and mask per row; row 1's epoch-3 mask AP (-1: no objects) is dropped.
    assert len(ap_ax.lines) == 4
    bbox_a, segm_a, bbox_b, segm_b = ap_ax.lines
    assert list(bbox_a.get_ydata()) == pytest.approx([10.0, 20.0, 25.0])
    assert list(segm_a.get_ydata()) == pytest.approx([8.0, 15.0])
    assert [line.get_linestyle() for line in ap_ax.lines] == ["-", "--", "-", "--"]
    assert bbox_a.get_color() == segm_a.get_color() == loss_ax.lines[0].get_color()
    assert bbox_b.get_color() == segm_b.get_color() == loss_ax.lines[1].get_color() != bbox_a.get_color()


@pytest.mark.slow
def test_bbox_and_mask_ap_differ_by_marker_and_one_validation_says_so(study: StudyPaths, tmp_path: Path,
                                                                      drawn) -> None:
    """A row's bbox and mask AP share its colour; their markers tell them apart, also where a
    training validated once (one point each, no line to tell by its style)."""
    fig, _ = drawn(study, [("p.yaml", _row(1, "A", "a-1"))], tmp_path / "curves")
    bbox, segm = fig.axes[1].lines
    assert (bbox.get_marker(), segm.get_marker()) == ("o", "s") and segm.get_markerfacecolor() == "none"
    assert fig.axes[1].get_title() == "validation AP (%)"

    _write_log(study, "c-3", "20240101_000000", [*_train(1, 2.0, 1.0), _val(1, 0.05, 0.04)])  # validated once
    fig, _ = drawn(study, [("p.yaml", _row(3, "C", "c-3"))], tmp_path / "once")
    ap_ax = fig.axes[1]
    bbox, segm = ap_ax.lines
    assert list(bbox.get_ydata()) == pytest.approx([5.0]) and list(segm.get_ydata()) == pytest.approx([4.0])
    assert bbox.get_color() == segm.get_color() and bbox.get_marker() != segm.get_marker()
    assert ap_ax.get_title() == "validation AP (%): one validation each"
    legend = ap_ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["row 3: C", "bbox AP", "mask AP"]
    assert [h.get_marker() for h in legend.legend_handles[1:]] == ["o", "s"]


def test_nothing_recorded(tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "study")
    with pytest.raises(UserError, match="no training recorded yet"):
        training_curves.draw(paths, [("p.yaml", _row(1, "A", "a-1"))], tmp_path / "curves")
    assert not (tmp_path / "curves.png").exists()
