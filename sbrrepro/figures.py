"""`sbrrepro plot-iou`: SBR-CNN Fig. 3, the IoU distribution of the positive training RoIs.

One panel per chosen run, (a), (b), ...; in each, one histogram per series the run recorded (one
for Mask R-CNN, one per loop for R^3-CNN), summed over all training epochs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .configs import RowConfig
from .errors import UserError
from .plan import load_plan
from .results import load_histograms
from .study import Study
from .zoo import MODELS


@dataclass(frozen=True)
class Panel:
    title: str
    bin_edges: list[float]
    series: dict[str, list[int]]  # legend label -> counts per bin


def default_rows(study: Study) -> list[tuple[str, RowConfig]]:
    """The paper's Fig. 3: the first Mask R-CNN row, and the R^3-CNN row with 3 training loops
    (else the one with the most loops)."""
    registered = study.rows()
    trained = [(p, r) for p, r in registered if not r.eval_only]
    masks = [(p, r) for p, r in trained if r.model == "mask_rcnn"]
    r3 = [(p, r, load_plan(p).rows) for p, r in trained if r.model == "r3_cnn"]
    loops = {(p, r.row): next(x.options["loops"] for x in rows if x.number == r.row) for p, r, rows in r3}
    chosen = masks[:1]
    if r3:
        best = max(r3, key=lambda t: (loops[(t[0], t[1].row)] == 3, loops[(t[0], t[1].row)]))
        chosen.append(best[:2])
    return chosen


def _series_label(name: str, thresholds: list[float] | None) -> str:
    if name.startswith("loop") and thresholds:
        k = int(name[4:])
        return f"loop {k} (IoU ≥ {thresholds[k - 1]:g})"
    return {"rcnn": "positive RoIs (IoU ≥ 0.5)"}.get(name, name)


def panels(study: Study, rows: list[tuple[str, RowConfig]]) -> list[Panel]:
    out = []
    for i, (plan_path, rc) in enumerate(rows):
        loaded = load_histograms(study.run_dir(rc.train_key))  # recorded by the training
        if loaded is None:
            raise UserError(str(study.run_dir(rc.train_key)), None,
                            f"no IoU histograms yet for {rc.plan} row {rc.row}; it is written at each "
                            "epoch's end of its training (see `sbrrepro status`)")
        edges, series = loaded
        options = next(x.options for x in load_plan(plan_path).rows if x.number == rc.row)
        thresholds = options.get("iou_thresholds")
        title = f"({chr(ord('a') + i)}) {MODELS[rc.model].title} ({rc.plan} row {rc.row})"
        out.append(Panel(title, edges, {_series_label(k, thresholds): v for k, v in sorted(series.items())}))
    return out


def draw(panel_list: list[Panel], out: Path) -> list[Path]:
    """Write out.png and out.pdf; return both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panel_list), figsize=(5.5 * len(panel_list), 4), squeeze=False)
    for ax, panel in zip(axes[0], panel_list):
        edges = panel.bin_edges
        step = edges[1] - edges[0]
        width = step / max(1, len(panel.series))
        for k, (label, counts) in enumerate(panel.series.items()):
            ax.bar([e + k * width for e in edges[:-1]], counts, width=width, align="edge", label=label)
        ax.set_xlim(edges[0], edges[-1])
        ax.set_xticks(edges)
        ax.tick_params(axis="x", labelrotation=45)
        ax.set_xlabel("IoU with the matched ground truth")
        ax.set_ylabel("positive training RoIs")
        ax.set_title(panel.title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in (".png", ".pdf"):
        path = out.with_suffix(ext)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{ext}")
        fig.savefig(tmp, dpi=150)
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths
