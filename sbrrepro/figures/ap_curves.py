"""AP per training epoch (GRoIE Figs. 2, 4, 5, 6): one curve per row, from the validation after each
epoch of the row's training (its recipe sets `curves`), with the paper's final number marked at
the paper's last epoch. The figure plan's first metric is the AP drawn (bbox_AP or segm_AP).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..layout import StudyPaths
from ..metrics import COCO_KEYS, LABELS
from ..results import epoch_metrics
from ..rows import RowConfig
from ..verify import number
from . import pyplot, save

if TYPE_CHECKING:
    from ..plan import Plan


def draw(paths: StudyPaths, rows: list[tuple[Plan, RowConfig]], out: Path) -> list[Path]:
    """Write out.png and out.pdf; return both paths."""
    if not rows:
        raise UserError(str(paths.root), "rows", "no row to draw")
    for plan in {plan.name: plan for plan, _ in rows}.values():
        if not plan.metrics or plan.metrics[0] not in COCO_KEYS:
            raise UserError(str(plan.path), "metrics", "an AP-per-epoch figure draws its plan's first metric: a "
                            "COCO AP such as bbox_AP or segm_AP")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    drawn = 0
    for plan, rc in rows:
        metric = plan.metrics[0]
        per_epoch = epoch_metrics(paths.run(rc.train_key))
        epochs = sorted(e for e, m in per_epoch.items() if COCO_KEYS[metric] in m)
        if not epochs:
            continue
        line, = ax.plot(epochs, [100 * per_epoch[e][COCO_KEYS[metric]] for e in epochs], marker="o", markersize=3,
                        label=rc.label)
        published = number(plan.published[rc.row].get(metric))
        if published is not None:
            ax.plot([plan.row(rc.row).recipe["epochs"]], [published], marker="*", markersize=10, color=line.get_color(),
                    markerfacecolor="none", linestyle="none")
        drawn += 1
    if not drawn:
        plt.close(fig)
        raise UserError(str(paths.root), None, "no validation recorded yet for the figure's rows "
                        "(see `sbrrepro status`)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{LABELS[metric]} (%)")
    ax.set_title(f"{rows[0][0].title} (stars: the paper's final numbers)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out)
