"""Stages 1 and 2 together, as `run` and `speed` start: plans -> a study holding every row's config.

Every plan, the study's scale and (unless only configs are wanted) the data are checked before
anything is written, so bad input leaves nothing half-made.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .configs import RowConfig, Scale, full_scale, smoke_scale, write_configs
from .dataset import SyntheticSpec, ensure_dataset
from .errors import UserError
from .layout import StudyPaths
from .plan import Plan, Row, load_plans
from .study import Study
from .zoo import MODELS


@dataclass(frozen=True)
class Prepared:
    study: Study
    rows: list[tuple[Plan, Row, RowConfig]]  # every row of every plan, in plan order

    @property
    def trained(self) -> list[tuple[Row, RowConfig]]:
        """The rows that run jobs (not those only counted or computed from annotations)."""
        return [(row, rc) for _, row, rc in self.rows if MODELS[row.model].trains]


def scale_of(study_root: Path, smoke: bool, epochs: int | None, data_root: str | None) -> Scale:
    if smoke:
        scale = smoke_scale((StudyPaths(study_root).data / SyntheticSpec().folder_name()).resolve())
    else:
        scale = full_scale(Path(data_root or os.environ.get("SBRREPRO_COCO", "data/coco")).resolve())
    return dataclasses.replace(scale, epochs=epochs) if epochs else scale


def _require_coco(plans: list[Plan], scale: Scale) -> None:
    """At full scale, every row's COCO splits must be there."""
    for plan in plans:
        for i, row in enumerate(plan.rows):
            if not MODELS[row.model].trains:
                continue
            for role, split in (("train", row.recipe["train_split"]), ("val", row.recipe["eval_split"])):
                ann = scale.data_root / scale.files(role, split)[0]
                if not ann.exists():
                    raise UserError(str(plan.path), f"rows[{i}].recipe", f"COCO not found: {ann} is missing; pass "
                                    "--data-root DIR (or set SBRREPRO_COCO), or use --smoke for the embedded dataset")


def prepare(plan_files: Sequence[str], study_root: Path, smoke: bool, epochs: int | None = None,
            data_root: str | None = None, dry_run: bool = False) -> Prepared:
    """Load and check the plans, write each row's config into the study (made if new) and register
    the rows; unless `dry_run`, check the COCO splits (full scale) or generate the dataset (smoke)."""
    if epochs is not None and epochs < 1:
        raise UserError("command line", "--epochs", f"must be at least 1, got {epochs}")
    plans = load_plans(plan_files)  # every plan is checked before anything is written
    scale_name = "smoke" if smoke else "full"
    if StudyPaths(study_root).meta.exists():
        Study.open(study_root, scale_name)  # a scale mismatch is an error before anything is written
    scale = scale_of(study_root, smoke, epochs, data_root)
    if not dry_run and not smoke:
        _require_coco(plans, scale)
    study = Study.open(study_root, scale_name, create=True)
    rows = []
    for plan in plans:
        written = write_configs(plan, scale, study.paths)
        study.register(plan.path, written)
        rows += [(plan, row, rc) for row, rc in zip(plan.rows, written)]
    if smoke and not dry_run:
        ensure_dataset(study.paths.data)
    return Prepared(study, rows)
