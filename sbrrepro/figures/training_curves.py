"""Training curves of a study's rows: the mean training loss of each epoch (left) and the AP of the
validation after each epoch (right: bbox solid with filled circles, mask dashed with open squares,
one colour per row, so that a single validation's two points are told apart too), from what MMEngine
logged. It shows whether a training converged, or diverged, before its final numbers are read.
Rows that share a training are drawn once; rows that recorded nothing yet are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..layout import StudyPaths
from ..results import epoch_losses, epoch_metrics
from ..rows import RowConfig
from . import pyplot, save

if TYPE_CHECKING:
    from ..plan import Plan

# CocoMetric's key, its legend label, line style, marker and marker face ("none": open)
AP_KEYS = (("coco/bbox_mAP", "bbox AP", "-", "o", None), ("coco/segm_mAP", "mask AP", "--", "s", "none"))


def draw(paths: StudyPaths, rows: list[tuple[Plan, RowConfig]], out: Path) -> list[Path]:
    """Write out.png and out.pdf; return both paths."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    fig, (loss_ax, ap_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    seen: set[str] = set()
    for _, rc in rows:
        if rc.train_key in seen:
            continue
        seen.add(rc.train_key)
        run = paths.run(rc.train_key)
        losses, metrics = epoch_losses(run), epoch_metrics(run)
        curves = {key: {e: 100 * m[key] for e, m in sorted(metrics.items()) if m.get(key, -1) >= 0}
                  for key, *_ in AP_KEYS}
        if not losses and not any(curves.values()):
            continue
        label = f"row {rc.row}: {rc.label}"
        colour = loss_ax.plot(list(losses), list(losses.values()), marker="o", markersize=3, label=label)[0].get_color()
        for key, _, style, marker, face in AP_KEYS:
            if curves[key]:
                ap_ax.plot(list(curves[key]), list(curves[key].values()), linestyle=style, marker=marker,
                           markersize=5, markerfacecolor=face, color=colour, label=label if style == "-" else None)
    if not loss_ax.lines:
        plt.close(fig)
        raise UserError(str(paths.root), None, "no training recorded yet for the figure's rows "
                        "(see `sbrrepro status`)")
    last = max(max(line.get_xdata(), default=1) for ax in (loss_ax, ap_ax) for line in ax.lines)
    once = bool(ap_ax.lines) and all(len(line.get_xdata()) == 1 for line in ap_ax.lines)  # points, no curve
    ap_title = "validation AP (%): one validation each" if once else "validation AP (%)"
    for ax, title in ((loss_ax, "training loss"), (ap_ax, ap_title)):
        ax.set_xlim(0.5, last + 0.5)  # whole epochs, a one-epoch run included
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    handles, labels = ap_ax.get_legend_handles_labels()
    styles = [Line2D([], [], color="grey", linestyle=style, marker=marker, markerfacecolor=face)
              for _, _, style, marker, face in AP_KEYS]
    ap_ax.legend(handles + styles, labels + [name for _, name, *_ in AP_KEYS], fontsize=8)
    fig.tight_layout()
    return save(fig, out)
