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
from .config_files import Built, build, write
from .configs import Scale, full_scale, on_profile, smoke_scale
from .datacheck import Split, Summary, check
from .dataset import SyntheticSpec, ensure_dataset
from .datasets import BUILT_IN, built_in, load_dataset
from .errors import UserError
from .layout import StudyPaths
from .plan import Plan, Row, load_plans
from .rows import TRAINED, RowConfig
from .study import Study, select
from .vocabulary import FRAMEWORKS
from .weights import folder, stage, urls


@dataclass(frozen=True)
class RowName:
    plan: str
    row: int
    seed: int


@dataclass(frozen=True)
class Request:
    """What `run`, `preflight` and `speed` ask of the first two stages. `dataset`: a dataset profile
    file; `seeds`: every row trained on seeds 0 .. seeds - 1 instead of the plans' seeds; `rows`: the
    training rows to submit, named as `study.select` reads them; `framework`: every row built with that
    MMDetection's model settings instead of its paper's. At full scale the configs load their pretrained
    weights from local files (see sbrrepro.weights): from the folder `weights` (a cluster profile's;
    default $SBRREPRO_WEIGHTS, else STUDY/weights), fetched into it where missing if `fetch_weights`
    (default: unless `dry_run`)."""

    plans: Sequence[str]
    study: Path
    smoke: bool = False
    epochs: int | None = None
    data_root: str | None = None
    dry_run: bool = False
    dataset: str | None = None
    seeds: int | None = None
    rows: Sequence[str] = ()
    framework: str | None = None
    weights: str | None = None
    fetch_weights: bool | None = None


@dataclass(frozen=True)
class Prepared:
    study: Study
    scale: Scale
    plans: list[Plan]
    rows: list[tuple[Plan, RowConfig]]  # every row with a model of every plan (each seed), in plan order
    # The training rows to submit: those the request names (with the trainings they need), else all.
    chosen: list[tuple[Row, RowConfig]]
    checked: list[Summary] = field(default_factory=list)  # the data splits checked before submitting
    # Each checkpoint the configs load -> the local file they load instead; a dry run's may not be there yet.
    weights: dict[str, Path] = field(default_factory=dict)
    whole: bool = True  # every row of the plans chosen: their cited and derived lines are shown too


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
        scale = on_profile(scale, load_dataset(dataset))
    return dataclasses.replace(scale, epochs=epochs) if epochs else scale


def dataset_name(scale: Scale) -> str:
    """The name a study records of its data: its dataset profile's (a built-in one's or a user's)."""
    return scale.dataset.name


def data_cache() -> Path:
    """Where passed data checks are kept, for every study of this user (see `datacheck`)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sbrrepro" / "datacheck.json"


def check_dataset(study_root: Path, dataset: str, data_root: str | None) -> list[Summary]:
    """`check-data`: a dataset's training and validation splits checked (the embedded one made first)."""
    smoke = dataset == built_in(smoke=True)
    scale = scale_of(study_root, smoke, None, data_root, dataset)
    if smoke:
        ensure_dataset(scale.data_root.parent)
    data = scale.dataset
    return [check(Split(role, data.root / ann, data.root / images), data_cache(), max_pixels=data.max_image_pixels)
            for role in ("train", "val") for ann, images in [data.files(role)]]


def _require_data(built: list[Built], scale: Scale) -> list[Summary]:
    """At full scale or on a dataset profile, every file and folder that a row's training and
    evaluation read must be there (annotations, images, semantic maps), and every annotated split
    must pass `datacheck` (each split once, its passes cached); returns their summaries."""
    splits: dict[tuple[Path, Path], str] = {}
    for plan, i, cfg in ((b.plan, b.index, b.cfg) for b in built):
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


def _checked(request: Request) -> list[Plan]:
    """The request's plans, each checked before anything is written, with its seeds."""
    for flag, value in (("--epochs", request.epochs), ("--seeds", request.seeds)):
        if value is not None and value < 1:
            raise UserError("command line", flag, f"must be at least 1, got {value}")
    if request.framework is not None and request.framework not in FRAMEWORKS:
        raise UserError("command line", "--framework", f"{request.framework!r} is not one of: "
                        f"{', '.join(FRAMEWORKS)}")
    plans = load_plans(request.plans)
    return [plan.with_seeds(request.seeds) for plan in plans] if request.seeds is not None else plans


def prepare(request: Request) -> Prepared:
    """Load and check the plans, write each row's config into the study (made if new) and register
    the rows; unless `dry_run`, check the data's files (full scale, or a dataset profile) or generate
    the embedded dataset (smoke). Each config is built once; the study is opened once."""
    r = request
    plans = _checked(r)
    names = [RowName(plan.name, row.number, seed) for plan in plans for row in plan.rows if row.kind == TRAINED
             for seed in row.seeds]
    wanted = set(select(names, list(r.rows), "command line")) if r.rows else None
    scale = dataclasses.replace(scale_of(r.study, r.smoke, r.epochs, r.data_root, r.dataset), framework=r.framework)
    # a scale or data mismatch with an existing study is an error before anything is written
    study = Study.open(r.study, scale.name, dataset_name(scale), create=True)
    cache = ConfigCache(study.paths.config_cache)
    check_data = not r.dry_run and (not r.smoke or scale.profile is not None)
    # Full-scale configs are read for the weights they load, and the data's for its files: built, not
    # looked up in the cache.
    built = build(plans, scale, study.paths, cache, configs=check_data or not r.smoke)
    checked = _require_data([rb.own for rb in built if rb.own.row.kind == TRAINED], scale) if check_data else []
    # Smoke models start from scratch; full-scale ones load weights, which a compute node may have no
    # internet to fetch: staged here, after the data is found good and before anything is written.
    fetch = not r.dry_run if r.fetch_weights is None else r.fetch_weights
    local = {} if r.smoke else stage(sorted({url for rb in built for b in (rb.own, rb.training) if b.cfg
                                             for url in urls(b.cfg)}), folder(study.root, r.weights), fetch)
    study.make()
    write(built, scale, cache, local)
    cache.save()
    rows = [(rb.own.plan, rb.record()) for rb in built]
    study.register(*((plan.path, [rc for p, rc in rows if p is plan]) for plan in plans))
    if r.smoke and not r.dry_run and scale.profile is None:
        ensure_dataset(study.paths.data)
    chosen = [(plan.row(rc.row), rc) for plan, rc in rows if rc.kind == TRAINED
              and (wanted is None or RowName(rc.plan, rc.row, rc.seed) in wanted)]
    return Prepared(study, scale, plans, rows, chosen, checked, local, whole=wanted is None)
