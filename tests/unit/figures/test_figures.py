"""sbrrepro.figures: the kinds of figure (its modules, each with a `draw`), a kind's caption or else the
plan's title, `save` writing each format whole and closing the figure, and the rows a study's figure
draws (`study_rows`)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from sbrrepro import figures
from sbrrepro.errors import UserError
from sbrrepro.figures import KINDS, caption, kind, pyplot, save, study_rows
from sbrrepro.layout import StudyPaths
from sbrrepro.plan import PLAN_FIELDS, load_plan
from sbrrepro.rows import COUNTED, RowConfig
from sbrrepro.study import Study
from tests.helpers import PLANS, imported_by

plt = pyplot()


def test_kinds_are_the_modules() -> None:
    assert KINDS == ("anchor_coverage", "ap_curves", "iou_histograms", "training_curves")
    modules = {p.stem for p in Path(figures.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert set(KINDS) == modules


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_draws(name: str) -> None:
    """Each kind's `draw(paths, rows, out, ...)`, as collect calls it."""
    module = kind(name)
    assert module.__name__ == f"sbrrepro.figures.{name}" and module is kind(name)
    assert list(inspect.signature(module.draw).parameters)[:3] == ["paths", "rows", "out"]


def test_a_plans_figure_is_one_of_the_kinds() -> None:
    check = PLAN_FIELDS["figure"].check
    assert all(check(name) is None for name in KINDS)
    assert check("bar_chart") == f"'bar_chart' is not one of: {', '.join(KINDS)}"
    used = {load_plan(p).figure for p in PLANS.glob("*/fig*.yaml")}
    assert used <= set(KINDS) and {"ap_curves", "iou_histograms", "anchor_coverage"} <= used


def test_kinds_listed_without_importing_them() -> None:
    assert len(KINDS) == 4 and imported_by("sbrrepro.figures", ("sbrrepro.figures.", "matplotlib")) == []


def test_unknown_kind() -> None:
    with pytest.raises(ModuleNotFoundError):
        kind("bar_chart")


def test_caption_of_the_kind_else_the_title() -> None:
    assert caption("iou_histograms", "IoU distribution of the positive training RoIs") == \
        "IoU distribution of the proposals at the assigner"  # what collect draws, whatever the plan says
    for name in ("ap_curves", "anchor_coverage", "training_curves"):
        assert caption(name, "the plan's title") == "the plan's title"


def _figure():
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    return fig


def test_save_writes_each_format_and_closes(tmp_path: Path) -> None:
    fig = _figure()
    out = tmp_path / "figures" / "deep" / "sbr-cnn-fig3"  # folders made
    assert save(fig, out) == [out.with_suffix(".png"), out.with_suffix(".pdf")]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in out.parent.iterdir()) == ["sbr-cnn-fig3.pdf", "sbr-cnn-fig3.png"]  # no temporary
    assert not plt.fignum_exists(fig.number)


def test_save_replaces_and_takes_other_formats(tmp_path: Path) -> None:
    out = tmp_path / "fig.v2"  # a dot in the name is no suffix to keep
    out.with_suffix(".svg").write_text("old")
    assert save(_figure(), out, (".svg",)) == [tmp_path / "fig.svg"]
    assert "<svg" in (tmp_path / "fig.svg").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["fig.svg"]


def test_pyplot_needs_no_display() -> None:
    assert pyplot() is plt and plt.get_backend().lower() == "agg"


# ---- study_rows


def _row(plan: str, row: int, key: str, seed: int = 0, row_kind: str = "trained") -> RowConfig:
    return RowConfig(plan, row, "mask_rcnn", f"row {row}", Path(f"{key}.py"), key, Path(f"{key}.py"), key, seed,
                     row_kind)


@pytest.fixture
def study(tmp_path: Path) -> Study:
    """Fig. 3's two rows (row 2 of two seeds), Table 1's counted rows and Table 4's row 1."""
    study = Study.open(tmp_path / "study", "full", create=True)
    study.register((PLANS / "sbr-cnn" / "fig3.yaml", [_row("sbr-cnn/fig3", 1, "mask_rcnn-1"),
                                                      _row("sbr-cnn/fig3", 2, "r3_cnn-20", 0),
                                                      _row("sbr-cnn/fig3", 2, "r3_cnn-21", 1)]),
                   (PLANS / "sbr-cnn" / "table1.yaml", [_row("sbr-cnn/table1", 1, "head_layer-1", row_kind=COUNTED)]),
                   (PLANS / "sbr-cnn" / "table4.yaml", [_row("sbr-cnn/table4", 1, "mask_rcnn-4")]))
    return study


def _named(rows: list) -> list[tuple[str, int, int]]:
    return [(plan.name, rc.row, rc.seed) for plan, rc in rows]


def test_study_rows_of_a_kind(study: Study) -> None:
    """A figure plan's trained rows, a row of several seeds by its first, each with its loaded plan."""
    rows = study_rows(study, None, "iou_histograms")
    assert _named(rows) == [("sbr-cnn/fig3", 1, 0), ("sbr-cnn/fig3", 2, 0)]
    assert rows[0][0] is rows[1][0] and rows[0][0].figure == "iou_histograms"


def test_study_rows_every_trained_row(study: Study) -> None:
    assert _named(study_rows(study, None)) == [("sbr-cnn/fig3", 1, 0), ("sbr-cnn/fig3", 2, 0), ("sbr-cnn/table4", 1, 0)]


def test_study_rows_named(study: Study) -> None:
    """Rows named on the command line are drawn whatever their plan, in the order named; a counted row never."""
    assert _named(study_rows(study, ["sbr-cnn/table4:1", "sbr-cnn/fig3:2@1", "sbr-cnn/table1:1"],
                             "iou_histograms")) == [("sbr-cnn/table4", 1, 0), ("sbr-cnn/fig3", 2, 1)]


def test_study_rows_without_such_a_figure_plan(study: Study) -> None:
    with pytest.raises(UserError) as e:
        study_rows(study, None, "ap_curves")
    assert str(e.value) == (f"{study.root}: no ap_curves figure plan in this study (e.g. `sbrrepro run "
                            "plans/sbr-cnn/fig3.yaml`); or name the rows with --rows")
    assert study_rows(study, ["sbr-cnn/table1:1"]) == []  # none asked of a kind: no refusal


@pytest.mark.parametrize("name", ["ap_curves", "iou_histograms"])
def test_a_figure_of_no_rows_is_refused(name: str, tmp_path: Path) -> None:
    paths = StudyPaths(tmp_path / "study")
    with pytest.raises(UserError) as e:
        kind(name).draw(paths, [], tmp_path / "fig")
    assert (e.value.where, e.value.field, e.value.message) == (str(paths.root), "rows", "no row to draw")
