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

from .configs import RowConfig, Scale, build_config, full_scale, smoke_scale, write_configs
from .dataset import SyntheticSpec, ensure_dataset
from .errors import UserError
from .layout import StudyPaths
from .plan import Plan, Row, load_plans
from .study import Study
from .zoo import MODELS


@dataclass(frozen=True)
class Prepared:
    study: Study
    plans: list[Plan]
    rows: list[tuple[Plan, Row, RowConfig]]  # every row with a model of every plan, in plan order

    @property
    def trained(self) -> list[tuple[Row, RowConfig]]:
        """The rows that run jobs (not those only counted or computed from annotations)."""
        return [(row, rc) for _, row, rc in self.rows if MODELS[row.model].trains]

    @property
    def unrun(self) -> list[Row]:
        """The rows that name no model: cited results and derived lines."""
        return [row for plan in self.plans for row in plan.rows if row.model is None]


def scale_of(study_root: Path, smoke: bool, epochs: int | None, data_root: str | None) -> Scale:
    if smoke:
        scale = smoke_scale((StudyPaths(study_root).data / SyntheticSpec().folder_name()).resolve())
    else:
        scale = full_scale(Path(data_root or os.environ.get("SBRREPRO_COCO", "data/coco")).resolve())
    return dataclasses.replace(scale, epochs=epochs) if epochs else scale


def _require_data(plans: list[Plan], scale: Scale) -> None:
    """At full scale, every file and folder that a row's training and evaluation read must be there:
    annotations, images, semantic maps."""
    for plan in plans:
        for i, row in enumerate(plan.rows):
            if row.model is None or not MODELS[row.model].trains:
                continue
            cfg = build_config(row, scale)
            for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
                ds = cfg[loader]["dataset"]
                needed = [Path(ds["data_root"]) / ds["ann_file"], *(Path(ds["data_root"]) / p
                                                                    for p in ds["data_prefix"].values())]
                if missing := next((p for p in needed if not p.exists()), None):
                    hint = (" (COCO-stuff's stuffthingmaps_trainval2017.zip, unpacked there)"
                            if "stuffthingmaps" in str(missing) else "")
                    raise UserError(str(plan.path), f"rows[{i}].recipe", f"COCO not found: {missing} is missing{hint}; "
                                    "pass --data-root DIR (or set SBRREPRO_COCO), or use --smoke for the embedded "
                                    "dataset")


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
        _require_data(plans, scale)
    study = Study.open(study_root, scale_name, create=True)
    rows = []
    for plan in plans:
        written = write_configs(plan, scale, study.paths)
        study.register(plan.path, written)
        rows += [(plan, row, rc) for row, rc in zip(plan.model_rows, written)]
    if smoke and not dry_run:
        ensure_dataset(study.paths.data)
    return Prepared(study, plans, rows)
