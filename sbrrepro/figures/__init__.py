"""Stage 5 for figures: a figure plan (`figure: KIND`) -> its figure, drawn by this package's module
of that kind. `collect` draws every figure plan of a study; `plot-iou` and `plot-anchors` draw one
kind with options. A new kind of figure is one module here with

    def draw(paths: StudyPaths, rows: list[tuple[Plan, RowConfig]], out: Path, **options) -> list[Path]

(paths: the study's files; rows: the (plan, row config) pairs to draw; out: the output path
without its suffix), which raises UserError when what it needs is not there yet. A kind whose
options change what the figure shows also has

    def caption() -> str

(what `draw` with its default options, as `collect` draws it, shows), which the report uses instead
of the plan's title.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

# The module names, listed without importing them (plans check a figure's kind against them).
KINDS = tuple(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def kind(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def caption(name: str, title: str) -> str:
    """What a figure of kind `name`, drawn as `collect` draws it, shows: its kind's own caption, else
    the plan's `title`."""
    module = kind(name)
    return module.caption() if hasattr(module, "caption") else title


def save(fig: Any, out: Path, suffixes: tuple[str, ...] = (".png", ".pdf")) -> list[Path]:
    """Write a matplotlib figure next to `out` in each format, each file renamed into place whole."""
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in suffixes:
        path = out.with_suffix(suffix)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{suffix}")
        fig.savefig(tmp, dpi=150)
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


def pyplot() -> Any:
    """matplotlib's pyplot on a backend that needs no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def study_rows(study: Any, wanted: list[str] | None, of_kind: str | None = None) -> list[tuple[Any, Any]]:
    """The (plan, row config) pairs a figure of a study draws, a row of several seeds by its first: the
    trained rows `wanted` names, else those of the study's figure plans of `of_kind` (None: every one)."""
    from ..collect import one_per_row
    from ..errors import UserError
    from ..plan import load_plan
    from ..rows import TRAINED

    registered = [(p, rc) for p, rc in study.select_rows(wanted) if rc.kind == TRAINED]
    plans = {p: load_plan(p) for p in dict.fromkeys(p for p, _ in registered)}
    found = one_per_row([(plans[p], rc) for p, rc in registered
                         if wanted or of_kind is None or plans[p].figure == of_kind])
    if not found and of_kind is not None:
        raise UserError(str(study.root), None, f"no {of_kind} figure plan in this study (e.g. `sbrrepro run "
                        "plans/sbr-cnn/fig3.yaml`); or name the rows with --rows")
    return found
