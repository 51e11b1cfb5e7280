"""The IoU distribution of the training RoIs (SBR-CNN Fig. 3), of one of the two populations that
the trainings record: every proposal at the assigner, negatives included ('proposals', what the
authors' histogram code counts, the default), or the positive RoIs that train the heads
('positives').

One panel per row, (a), (b), ...; in each, one histogram per series its training recorded (one per
R-CNN stage or loop), summed over all training epochs, labelled as the row's zoo model names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..layout import StudyPaths
from ..results import load_histograms
from ..rows import RowConfig
from ..zoo import MODELS
from . import pyplot, save

if TYPE_CHECKING:
    from ..plan import Plan


@dataclass(frozen=True)
class Panel:
    title: str
    bin_edges: list[float]
    series: dict[str, list[int]]  # legend label -> counts per bin


POPULATIONS = {"proposals": "proposals at the assigner", "positives": "positive training RoIs"}
POPULATION = "proposals"  # what `collect` draws, and the report captions


def caption(population: str = POPULATION) -> str:
    """What the figure of `population` shows: its title, and its caption in the report."""
    return f"IoU distribution of the {POPULATIONS[population]}"


def panels(paths: StudyPaths, rows: list[tuple[Plan, RowConfig]], population: str) -> list[Panel]:
    out = []
    for i, (plan, rc) in enumerate(rows):
        run = paths.run(rc.train_key)
        loaded = load_histograms(run, population)  # recorded by the training
        if loaded is None:
            raise UserError(str(run.root), None, f"no IoU histograms yet for {rc.plan} row {rc.row}; they are "
                            "written at each epoch's end of its training (see `sbrrepro status`)")
        edges, series = loaded
        options = plan.row(rc.row).options
        labels = MODELS[rc.model].iou_series(options)
        title = f"({chr(ord('a') + i)}) {MODELS[rc.model].title} ({rc.plan} row {rc.row})"
        out.append(Panel(title, edges, {labels.get(k, k): v for k, v in sorted(series.items())}))
    return out


def draw(paths: StudyPaths, rows: list[tuple[Plan, RowConfig]], out: Path, population: str = POPULATION) -> list[Path]:
    """Write out.png and out.pdf; return both paths."""
    if not rows:
        raise UserError(str(paths.root), "rows", "no row to draw")
    panel_list = panels(paths, rows, population)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panel_list), figsize=(5.5 * len(panel_list), 4), squeeze=False)
    for ax, panel in zip(axes[0], panel_list):
        edges = panel.bin_edges
        width = (edges[1] - edges[0]) / max(1, len(panel.series))
        for k, (label, counts) in enumerate(panel.series.items()):
            ax.bar([e + k * width for e in edges[:-1]], counts, width=width, align="edge", label=label)
        ax.set_xlim(edges[0], edges[-1])
        ax.set_xticks(edges)
        ax.tick_params(axis="x", labelrotation=45)
        ax.set_xlabel("IoU with the best ground truth" if population == "proposals" else
                      "IoU with the matched ground truth")
        ax.set_ylabel(POPULATIONS[population])
        ax.set_title(panel.title, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(caption(population), fontsize=11)
    fig.tight_layout()
    return save(fig, out)
