"""Stage 2: a plan row + a scale -> one complete MMDetection config, and the key of what it trains.

Models come from the zoo (MMDetection's shipped configs, changed per model), get the plan's recipe,
then the scale: `full` is the paper's setting on COCO; `smoke` shrinks the same config (synthetic
data, ResNet-18 from scratch, small images, few epochs).

A key names what is trained, never where things live: it hashes the config's content with the data
root replaced by the data's identity (which dataset; the synthetic dataset's generator settings), so
a study that moves, or COCO mounted elsewhere, keeps its keys. The written config has the real paths.
Nothing here imports torch or the plugins, and no formatter runs: a dry run of many plans is quick.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .datasets import DatasetProfile, coco, embedded
from .plan import Row
from .rows import TRAINED
from .weights import placed as with_weights
from .zoo import MODELS, Model
from .zoo._frameworks import apply as with_era
from .zoo._parts import config_node
from .zoo._parts import walk as _walk

PLUGINS = "sbrrepro.models"
HASH_LEN = 12
# Splits whose annotations are withheld (COCO's evaluation server scores them) -> the split that the
# rows' trainings validate on: a test-dev row evaluates the training that its val2017 rows share.
SERVER_SPLITS = {"test-dev2017": "val2017"}


@dataclass(frozen=True)
class Scale:
    """Where the data is and how big the runs are. `smoke` values shrink every row alike."""

    name: str  # "full" or "smoke"
    dataset: DatasetProfile  # the data's files, classes and identity: COCO's, the embedded set's or a user's
    epochs: int = 0  # > 0: train this many epochs instead of the recipe's, lr steps scaled alike
    # smoke only:
    images: int = 128
    proposals_train: int = 300
    proposals_test: int = 100
    rcnn_samples: int = 64
    roi_sampling_ratio: int = 2  # RoIAlign points per bin; 0 (adaptive) dominates CPU time
    width: int = 256  # channels of the neck and heads (the paper's 256)
    lr_per_image: float = 0.0
    warmup_iters: int = 0
    clip_grad: float | None = None
    framework: str | None = None  # `run --framework`: every row with this MMDetection's settings, not its paper's

    @property
    def data_root(self) -> Path:
        return self.dataset.root

    @property
    def data_id(self) -> str:
        """What the data is, for keys: 'coco', the embedded set's folder name or a profile's identity."""
        return self.dataset.identity

    @property
    def classes(self) -> tuple[str, ...] | None:  # None: the dataset's own (COCO's 80)
        return self.dataset.classes

    @property
    def semantic_classes(self) -> int | None:  # None: COCO-stuff's 183
        return self.dataset.semantic_classes

    @property
    def profile(self) -> DatasetProfile | None:
        """The user's dataset profile (its YAML file); None on a built-in dataset."""
        return None if self.dataset.source is None else self.dataset

    def files(self, role: str, split: str) -> tuple[str, str]:
        """Annotation file and image folder, relative to the data root, of a recipe's split (`role`:
        'train' or 'val'); a split of the evaluation server is the test split: image information only."""
        return self.dataset.files("test" if split in SERVER_SPLITS else role, split)

    def semantic_maps(self, role: str, split: str) -> str:
        """The folder of a split's semantic segmentation maps (read in training and validation only)."""
        return self.dataset.semantic_maps(role, split)


def full_scale(coco_root: Path) -> Scale:
    return Scale("full", coco(coco_root))


def on_profile(scale: Scale, profile: DatasetProfile) -> Scale:
    """`scale` on a dataset profile's data: its files, classes and identity."""
    return dataclasses.replace(scale, dataset=profile)


def smoke_scale(dataset_root: Path) -> Scale:
    return Scale("smoke", embedded(dataset_root), epochs=12, images=128, width=64, lr_per_image=0.005,
                 warmup_iters=50, clip_grad=35.0)


# ---- recipe and scale ----------------------------------------------------------------------------
def _set_where(node: Any, type_name: str, **values: Any) -> None:
    """Update every dict of type `type_name` inside node."""
    _walk(node, lambda d: d.get("type") == type_name and d.update(values))


def _apply_schedule(cfg: dict, recipe: dict[str, Any], epochs: int) -> None:
    """The recipe's schedule; with `epochs` (> 0) that many epochs instead, its lr steps scaled alike
    (an iteration schedule becomes an epoch one). An iteration schedule is validated at its end,
    checkpointed every twelfth of it (a preempted job loses little) and logged by iteration."""
    warmup = dict(type="LinearLR", start_factor=recipe["warmup_ratio"], by_epoch=False, begin=0,
                  end=recipe["warmup_iters"])
    iters = 0 if epochs else recipe["iters"]
    if iters:
        cfg["train_cfg"] = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters)
        steps = dict(type="MultiStepLR", begin=0, end=iters, by_epoch=False, milestones=list(recipe["lr_steps"]),
                     gamma=0.1)
        cfg["default_hooks"]["checkpoint"].update(by_epoch=False, interval=max(1, iters // 12))
        cfg["log_processor"] = {**cfg.get("log_processor", {}), "by_epoch": False}
        cfg["default_hooks"]["logger"]["log_metric_by_epoch"] = False  # validations logged at their iteration
        cfg["train_dataloader"]["sampler"] = dict(type="InfiniteSampler", shuffle=True)
    else:
        milestones = list(recipe["lr_steps"])
        if epochs:
            milestones = [max(1, round(m * epochs / (recipe["iters"] or recipe["epochs"]))) for m in milestones]
        epochs = epochs or recipe["epochs"]
        cfg["train_cfg"] = dict(type="EpochBasedTrainLoop", max_epochs=epochs,
                                val_interval=1 if recipe["curves"] else min(recipe["val_interval"], epochs))
        steps = dict(type="MultiStepLR", begin=0, end=epochs, by_epoch=True, milestones=milestones, gamma=0.1)
    cfg["param_scheduler"] = [warmup, steps]


def _apply_recipe(cfg: dict, recipe: dict[str, Any], epochs: int) -> None:
    """The paper's recipe; `epochs` (> 0): that many epochs instead (see `_apply_schedule`)."""
    _apply_schedule(cfg, recipe, epochs)
    cfg["optim_wrapper"] = dict(type="OptimWrapper", optimizer=dict(recipe["optimizer"]))
    if recipe["clip_grad"]:
        cfg["optim_wrapper"]["clip_grad"] = dict(max_norm=recipe["clip_grad"], norm_type=2)
    if recipe["roi_sampling_ratio"] is not None:
        _set_where(cfg["model"], "RoIAlign", sampling_ratio=recipe["roi_sampling_ratio"])
    if recipe["test_score_thr"] is not None:
        _walk(cfg["model"]["test_cfg"]["rcnn"],
              lambda d: "score_thr" in d and d.update(score_thr=recipe["test_score_thr"]))
    cfg["randomness"] = dict(seed=recipe["seed"])
    cfg["train_dataloader"]["batch_size"] = recipe["images_per_gpu"]
    gpus = recipe["nodes"] * recipe["gpus_per_node"]
    # The paper's total batch: on another number of GPUs the lr is scaled linearly (and flagged).
    cfg["auto_scale_lr"] = dict(enable=True, base_batch_size=gpus * recipe["images_per_gpu"])
    _set_where(cfg, "Resize", scale=tuple(recipe["image_scale"]))


def _apply_data(cfg: dict, scale: Scale, recipe: dict[str, Any], root: str) -> None:
    """The dataset of the recipe's splits under `root` (the data root, or its identity for the key);
    semantic maps where the model's pipeline loads them. A split of the evaluation server is the
    test set (validation is on the split its training validates on): its images are loaded
    without annotations and its detections written as files for the server, not scored."""
    server = recipe["eval_split"] in SERVER_SPLITS
    val_split = SERVER_SPLITS.get(recipe["eval_split"], recipe["eval_split"])
    for loader, role, split in (("train_dataloader", "train", recipe["train_split"]),
                                ("val_dataloader", "val", val_split)):
        ann, img = scale.files(role, split)
        ds = cfg[loader]["dataset"]
        prefix = dict(img=img, **({"seg": scale.semantic_maps(role, split)} if "seg" in ds["data_prefix"] else {}))
        ds.update(data_root=root, ann_file=ann, data_prefix=prefix)
        if scale.classes:
            ds["metainfo"] = dict(classes=scale.classes)
    cfg["test_dataloader"] = copy.deepcopy(cfg["val_dataloader"])
    # CocoMetric does not join ann_file with data_root.
    cfg["val_evaluator"]["ann_file"] = root + scale.files("val", val_split)[0]
    cfg["test_evaluator"] = copy.deepcopy(cfg["val_evaluator"])
    if server:
        ann, img = scale.files("val", recipe["eval_split"])
        test = cfg["test_dataloader"]["dataset"]
        test.update(ann_file=ann, data_prefix=dict(img=img),
                    pipeline=[t for t in test["pipeline"] if t["type"] != "LoadAnnotations"])
        # The job sets where the files go (its work dir); the key must not depend on it.
        cfg["test_evaluator"].update(ann_file=root + ann, format_only=True, outfile_prefix="detections")


def _apply_classes(model: dict, scale: Scale, semantic_heads: tuple[str, ...]) -> None:
    """The dataset's classes in every head; a semantic head (of `semantic_heads`, the model's) has the
    maps' own labels (COCO-stuff's where the dataset does not say)."""
    def update(d: dict) -> None:
        if "num_classes" not in d:
            return
        if d.get("type") not in semantic_heads:
            d["num_classes"] = len(scale.classes)
        elif scale.semantic_classes:
            d["num_classes"] = scale.semantic_classes

    _walk(model, update)


def _apply_smoke(cfg: dict, scale: Scale, recipe: dict[str, Any], spec: Model) -> None:
    """MMDetection's standard keys shrunk alike for every row, then the model's own modules (its
    `smoke` narrowings)."""
    model = cfg["model"]
    # ResNet-18 from scratch: nothing pretrained to freeze or to keep the BN statistics of. GC-Net's
    # context blocks and DCN exist in bottleneck blocks only: there, a ResNet-50 with a quarter of its
    # channels has ResNet-18's stage widths (64-512).
    backbone = model["backbone"]
    if backbone.get("plugins") or backbone.get("dcn"):
        backbone.update(depth=50, base_channels=16)
    else:
        backbone.update(depth=18)
    backbone.update(init_cfg=None, frozen_stages=-1, norm_eval=False)
    _set_where(backbone, "SyncBN", type="BN")  # SyncBN needs GPUs in a process group (gloo on CPUs)
    if "neck" in model:
        model["neck"]["in_channels"] = [64, 128, 256, 512]
    _set_where(model, "ResLayer", depth=18, norm_eval=False)  # ResNet-C4's res5 head: ResNet-18's stage 4
    _set_where(model, "BN", requires_grad=True)  # from scratch, the caffe-style backbones' BN learns too
    # Without a neck (ResNet-C4) the heads read ResNet-50's C4 (1024) and, through the res5 shared
    # head, C5 (2048) widths: ResNet-18's are 256 and 512.
    stage_widths = {1024: 256, 2048: 512} if "neck" not in model else {}
    w = scale.width

    def narrow(d: dict) -> None:  # the paper's 256-channel neck and heads (1024-wide fcs) at width w
        for key in ("in_channels", "out_channels", "feat_channels", "conv_out_channels"):
            if d.get(key) == 256:
                d[key] = w
            elif isinstance(d.get(key), int) and d[key] in stage_widths:
                d[key] = stage_widths[d[key]]
        if d.get("fc_out_channels") == 1024:
            d["fc_out_channels"] = 4 * w

    for part, sub in model.items():
        if part not in ("backbone", "data_preprocessor", "train_cfg", "test_cfg"):
            _walk(sub, narrow)
    for own in spec.smoke:
        own(model, w)
    tr, te = model.get("train_cfg") or {}, model.get("test_cfg") or {}
    if "rpn_proposal" in tr:  # two-stage detectors
        tr["rpn_proposal"].update(nms_pre=scale.proposals_train, max_per_img=scale.proposals_train)
        te["rpn"].update(nms_pre=scale.proposals_test, max_per_img=scale.proposals_test)
        _set_where(tr["rcnn"], "RandomSampler", num=scale.rcnn_samples)
    _set_where(model, "RoIAlign", sampling_ratio=scale.roi_sampling_ratio)
    # RoIs map to FPN levels by size (level 0 below finest_scale px): at the paper's 800 px short
    # side that is 56; scaled with the images, small images still use every level.
    finest = round(56 * scale.images / 800)
    _walk(model, lambda d: (d.get("type") == "SingleRoIExtractor" or "finest_scale" in d) and
          d.update(finest_scale=finest))
    _set_where(cfg, "Resize", scale=(scale.images, scale.images))
    if not recipe["curves"] and "max_epochs" in cfg["train_cfg"]:  # an iteration schedule validates at its end
        cfg["train_cfg"]["val_interval"] = cfg["train_cfg"]["max_epochs"]  # evaluate once, at the end
    cfg["param_scheduler"][0]["end"] = scale.warmup_iters
    cfg["optim_wrapper"]["optimizer"]["lr"] = scale.lr_per_image * recipe["images_per_gpu"]
    cfg.setdefault("auto_scale_lr", dict(enable=True))["base_batch_size"] = recipe["images_per_gpu"]  # lr: one process
    if scale.clip_grad:  # from scratch on tiny data the first iterations can explode without it
        cfg["optim_wrapper"]["clip_grad"] = dict(max_norm=scale.clip_grad, norm_type=2)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].update(num_workers=0, persistent_workers=False)
    cfg["train_dataloader"]["dataset"]["filter_cfg"]["min_size"] = 4
    cfg["default_hooks"]["logger"]["interval"] = 10
    cfg["default_hooks"]["checkpoint"]["max_keep_ckpts"] = 1


def build_model(cfg: dict) -> Any:
    """The model of a config, with sbrrepro's plugins registered and MMDetection's registries as a
    Runner sets them (weights not initialised)."""
    from mmdet.registry import MODELS as REGISTRY
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import sbrrepro.models  # noqa: F401  (registers the plugins)

    register_all_modules()
    return REGISTRY.build(Config(cfg).model)


def _build(row: Row, scale: Scale, root: str) -> dict:
    model = MODELS[row.model]
    cfg = model.build(row.options)
    with_era(cfg, model.era_settings, scale.framework or row.recipe.get("framework"))
    for dotted, value in row.overrides.items():  # checked when the plan was loaded
        holder, key = config_node(cfg, dotted)
        holder[key] = value
    cfg["custom_imports"] = dict(imports=[PLUGINS], allow_failed_imports=False)
    if row.kind != TRAINED:
        return cfg
    if not row.own_schedule:
        _apply_recipe(cfg, row.recipe, scale.epochs)
    elif scale.epochs:  # a `base` config's own schedule, shortened to `epochs` as any row's is
        _apply_schedule(cfg, row.recipe, scale.epochs)
    _apply_data(cfg, scale, row.recipe, root)
    if scale.classes:
        _apply_classes(cfg["model"], scale, model.semantic_heads)
    if scale.name == "smoke":
        _apply_smoke(cfg, scale, row.recipe, model)
    cfg["custom_hooks"] = [*cfg.get("custom_hooks", []), dict(type="IoUHistogramHook")]
    cfg["env_cfg"]["dist_cfg"]["backend"] = "nccl"  # the job switches to gloo where there is no GPU
    return cfg


def _placed(node: Any, token: str, root: str) -> Any:
    """`node` with every string that starts with `token` starting with `root` instead."""
    if isinstance(node, dict):
        return {k: _placed(v, token, root) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_placed(v, token, root) for v in node)
    return root + node[len(token):] if isinstance(node, str) and node.startswith(token) else node


TENSORBOARD = "TensorboardVisBackend"


def with_tensorboard(cfg: dict) -> dict:
    """`cfg` with MMEngine's TensorBoard backend beside its visualizer's other backends, once (a
    config without a visualizer gets MMEngine's default one): the runner writes the event files into
    its log dir, `<work_dir>/<timestamp>/vis_data/` beside scalars.json, so `tensorboard --logdir
    STUDY/runs` shows every run's curves as they are logged."""
    visualizer = cfg.get("visualizer") or dict(type="Visualizer", name="visualizer",
                                                vis_backends=[dict(type="LocalVisBackend")])
    backends = list(visualizer.get("vis_backends") or [])
    if TENSORBOARD not in (str(b.get("type")).rsplit(".", 1)[-1] for b in backends):  # `mmengine.X` is X
        backends.append(dict(type=TENSORBOARD))
    return {**cfg, "visualizer": {**visualizer, "vis_backends": backends}}


def with_kept_checkpoints(cfg: dict, keep: int) -> dict:
    """`cfg` keeping only its last `keep` checkpoints (MMDetection keeps every epoch's, 0.3 to 1 GB
    each); the last is what a requeued job resumes from and, at the end, the final weights."""
    hooks = cfg.get("default_hooks", {})
    checkpoint = hooks.get("checkpoint")
    if not isinstance(checkpoint, dict):
        return cfg
    return {**cfg, "default_hooks": {**hooks, "checkpoint": {**checkpoint, "max_keep_ckpts": keep}}}


MASK_SIZES_METRIC = "TwoConventionCocoMetric"  # sbrrepro.models.common.coco_sizes
# How the MMDetection a paper's numbers came from sized detections for the mask AP_S/M/L: up to 2.11 a
# mask result kept its box, so pycocotools sized it by box area; 2.12 on (3.3) by mask area.
FRAMEWORK_MASK_SIZES = {"mmdet-1.x": "box", "mmdet-2.8": "box", "mmdet-3.3": "mask"}


def mask_sizes_by(recipe: dict[str, Any]) -> str:
    """The paper's convention for the mask AP_S/M/L: its recipe's `framework`'s, else its
    `mask_sizes_by`, else 3.3's (mask area)."""
    return FRAMEWORK_MASK_SIZES.get(recipe.get("framework")) or recipe.get("mask_sizes_by") or "mask"


def with_mask_sizes(cfg: dict, by: str) -> dict:
    """`cfg` whose COCO evaluators that score masks report the mask AP_S/M/L under both conventions
    (`segm_mAP_s_boxarea`, `..._maskarea`) and under `by`'s as `segm_mAP_s`; uploads for the
    evaluation server (format_only) are left as CocoMetric writes them (boxes kept)."""
    out = dict(cfg)
    for name in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(name)
        if not isinstance(evaluator, dict) or str(evaluator.get("type")).rsplit(".", 1)[-1] != "CocoMetric":
            continue
        metric = evaluator.get("metric", "bbox")
        if "segm" in ([metric] if isinstance(metric, str) else metric) and not evaluator.get("format_only"):
            out[name] = {**evaluator, "type": MASK_SIZES_METRIC, "mask_sizes_by": by}
    return out


def keyed_config(row: Row, scale: Scale, weights: dict[str, Path] | None = None) -> tuple[str, dict]:
    """The row's key, <model>-<hash of its config content with the data's identity for its root>,
    and its complete config (the real data root, TensorBoard's backend, the evaluator of the mask
    AP_S/M/L's size conventions), as a plain dict. `weights` (checkpoint reference -> local file,
    see `weights.stage`): the config loads those files instead of downloading at job start."""
    token = f"<{scale.data_id}>/"
    located = _build(row, scale, token)
    text = json.dumps(located, sort_keys=True, separators=(",", ":"), default=str)
    key = f"{row.model}-{hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]}"
    placed = _placed(located, token, str(scale.data_root).rstrip("/") + "/")
    if weights:  # where the same checkpoint is kept changes nothing trained: outside the key too
        placed = with_weights(placed, weights)
    # Outside the key, as the data root is: TensorBoard only observes a training, it changes nothing
    # trained, and trainings done before it was added are not trained again. So does the evaluator of
    # the mask sizes' conventions: it scores the same detections.
    if row.kind != TRAINED:
        return key, placed
    observed = with_mask_sizes(with_tensorboard(placed), mask_sizes_by(row.recipe))
    # How many checkpoints stay on disk changes nothing trained either.
    return key, with_kept_checkpoints(observed, row.recipe["keep_checkpoints"]) if scale.name == "full" else observed


def build_config(row: Row, scale: Scale) -> dict:
    """The complete config of one row, as a plain dict."""
    return keyed_config(row, scale)[1]
