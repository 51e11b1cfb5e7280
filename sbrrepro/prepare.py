"""Stages 1 and 2 together, as `run` and `speed` start: plans -> a study holding every row's config.

Every plan, the study's scale and (unless only configs are wanted) the data are checked, and the
pretrained weights the configs load are staged, before anything is written, so bad input or no
network leaves nothing half-made.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config_cache import ConfigCache
from .configs import RowConfig, Scale, build_config, full_scale, on_profile, smoke_scale, write_configs
from .datacheck import Split, Summary, check
from .dataset import SyntheticSpec, ensure_dataset
from .errors import UserError
from .layout import StudyPaths
from .plan import Plan, Row, load_plans
from .profiles import BUILT_IN, built_in, load_profile
from .study import Study, select
from .vocabulary import FRAMEWORKS
from .weights import folder, stage, urls
from .zoo import MODELS


@dataclass(frozen=True)
class RowName:
    plan: str
    row: int
    seed: int


@dataclass(frozen=True)
class Prepared:
    study: Study
    plans: list[Plan]
    rows: list[tuple[Plan, Row, RowConfig]]  # every row with a model of every plan (each seed), in plan order
    checked: list[Summary] = field(default_factory=list)  # the data splits checked before submitting
    # Each checkpoint the configs load -> the local file they load instead; a dry run's may not be there yet.
    weights: dict[str, Path] = field(default_factory=dict)

    @property
    def trained(self) -> list[tuple[Row, RowConfig]]:
        """The rows that run jobs (not those only counted or computed from annotations)."""
        return [(row, rc) for _, row, rc in self.rows if MODELS[row.model].trains]


def scale_of(study_root: Path, smoke: bool, epochs: int | None, data_root: str | None,
             dataset: str | None = None) -> Scale:
    """The study's scale on its data: COCO (full) or the embedded dataset (smoke) unless `dataset`
    names another (a profile file: both scales on its data)."""
    default = built_in(smoke)
    if dataset not in (None, default) and dataset in BUILT_IN:
        raise UserError("command line", "--dataset", f"{dataset} is for {'full' if smoke else 'smoke'} scale; at "
                        f"this scale the built-in dataset is {default}, or give a profile file")
    if smoke:
        scale = smoke_scale((StudyPaths(study_root).data / SyntheticSpec().folder_name()).resolve())
    else:
        scale = full_scale(Path(data_root or os.environ.get("SBRREPRO_COCO", "data/coco")).resolve())
    if dataset not in (None, default):
        scale = on_profile(scale, load_profile(dataset))
    return dataclasses.replace(scale, epochs=epochs) if epochs else scale


def dataset_name(scale: Scale) -> str:
    """The name a study records of its data: a profile's, or the built-in dataset's."""
    if scale.profile is not None:
        return scale.profile.name
    return built_in(scale.name == "smoke")


def data_cache() -> Path:
    """Where passed data checks are kept, for every study of this user (see `datacheck`)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sbrrepro" / "datacheck.json"


def _trained_configs(plans: list[Plan], scale: Scale) -> list[tuple[Plan, int, dict]]:
    """(plan, index in its rows, config) of every row that trains, its checkpoints as the zoo names them
    (a row's training, when another config, loads the same ones: only test-time options differ)."""
    return [(plan, i, build_config(row, scale)) for plan in plans for i, row in enumerate(plan.rows)
            if row.model is not None and MODELS[row.model].trains]


def _require_data(configs: list[tuple[Plan, int, dict]], scale: Scale) -> list[Summary]:
    """At full scale or on a dataset profile, every file and folder that a row's training and
    evaluation read must be there (annotations, images, semantic maps), and every annotated split
    must pass `datacheck` (each split once, its passes cached); returns their summaries."""
    splits: dict[tuple[Path, Path], str] = {}
    for plan, i, cfg in configs:
        for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
            ds = cfg[loader]["dataset"]
            root = Path(ds["data_root"])
            needed = [root / ds["ann_file"], *(root / p for p in ds["data_prefix"].values())]
            if (missing := next((p for p in needed if not p.exists()), None)) and scale.profile is not None:
                raise UserError(str(scale.profile.source), None, f"{missing} is missing (rows[{i}] of "
                                f"{plan.path} reads it)")
            if missing:
                hint = (" (COCO-stuff's stuffthingmaps_trainval2017.zip, unpacked there)"
                        if "stuffthingmaps" in str(missing) else "")
                raise UserError(str(plan.path), f"rows[{i}].recipe", f"COCO not found: {missing} is missing{hint}; "
                                "pass --data-root DIR (or set SBRREPRO_COCO), or use --smoke for the embedded "
                                "dataset")
            if not (loader == "test_dataloader" and cfg["test_evaluator"].get("format_only")):  # no annotations
                splits.setdefault((root / ds["ann_file"], root / ds["data_prefix"]["img"]), loader.split("_")[0])
    max_pixels = scale.profile and scale.profile.max_image_pixels
    return [check(Split(name, ann, images), data_cache(), max_pixels=max_pixels)
            for (ann, images), name in splits.items()]


def prepare(plan_files: Sequence[str], study_root: Path, smoke: bool, epochs: int | None = None,
            data_root: str | None = None, dry_run: bool = False, dataset: str | None = None,
            seeds: int | None = None, wanted: list[str] | None = None, framework: str | None = None,
            weights: str | None = None, fetch_weights: bool | None = None) -> Prepared:
    """Load and check the plans, write each row's config into the study (made if new) and register
    the rows; unless `dry_run`, check the data's files (full scale, or a dataset profile) or generate
    the embedded dataset (smoke). `dataset`: a dataset profile file (see `profiles`); `seeds`: train
    every row on seeds 0 .. seeds - 1 instead of the plans' seeds; `wanted`: rows named as `select`
    reads them, each of which must be a training row of the plans (checked before anything is written);
    `framework`: every row built with that MMDetection's model settings instead of its paper's.
    At full scale the configs load their pretrained weights from local files (see sbrrepro.weights): from
    the folder `weights` (a cluster profile's; default $SBRREPRO_WEIGHTS, else STUDY/weights), fetched
    into it where missing if `fetch_weights` (default: unless `dry_run`)."""
    for flag, value in (("--epochs", epochs), ("--seeds", seeds)):
        if value is not None and value < 1:
            raise UserError("command line", flag, f"must be at least 1, got {value}")
    if framework is not None and framework not in FRAMEWORKS:
        raise UserError("command line", "--framework", f"{framework!r} is not one of: {', '.join(FRAMEWORKS)}")
    plans = load_plans(plan_files)  # every plan is checked before anything is written
    if seeds is not None:
        plans = [plan.with_seeds(seeds) for plan in plans]
    if wanted:
        select([RowName(plan.name, row.number, seed) for plan in plans for row in plan.model_rows
                if MODELS[row.model].trains for seed in row.seeds], wanted, "command line")
    scale_name = "smoke" if smoke else "full"
    scale = dataclasses.replace(scale_of(study_root, smoke, epochs, data_root, dataset), framework=framework)
    if StudyPaths(study_root).meta.exists():  # a scale or data mismatch is an error before anything is written
        Study.open(study_root, scale_name, dataset_name(scale))
    check_data = not dry_run and (not smoke or scale.profile is not None)
    configs = _trained_configs(plans, scale) if check_data or not smoke else []
    checked = _require_data(configs, scale) if check_data else []
    # Smoke models start from scratch; full-scale ones load weights, which a compute node may have no
    # internet to fetch: staged here, after the data is found good and before anything is written.
    local = {} if smoke else stage(sorted({url for *_, cfg in configs for url in urls(cfg)}),
                                   folder(study_root, weights), not dry_run if fetch_weights is None else fetch_weights)
    study = Study.open(study_root, scale_name, dataset_name(scale), create=True)
    cache = ConfigCache(study.paths.config_cache)
    written = [(plan, write_configs(plan, scale, study.paths, cache, local)) for plan in plans]
    cache.save()
    study.register(*((plan.path, configs) for plan, configs in written))
    rows = [(plan, plan.row(rc.row), rc) for plan, configs in written for rc in configs]
    if smoke and not dry_run and scale.profile is None:
        ensure_dataset(study.paths.data)
    return Prepared(study, plans, rows, checked, local)
