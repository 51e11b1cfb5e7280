"""Stage 2: a plan row + a scale -> one complete MMDetection config file, named by its content hash.

Models start from MMDetection's own shipped configs (loaded by absolute path, so no `mmdet::`
resolution is needed), get the plan's recipe, then the scale: `full` is the paper's setting on COCO;
`smoke` shrinks the same config (synthetic data, ResNet-18 from scratch, small images, few epochs).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dataset import CLASSES
from .files import atomic_write
from .plan import Plan, Row

PLUGINS = "sbrrepro.models"
HASH_LEN = 12


def mmdet_config_dir() -> Path:
    import mmdet

    return Path(mmdet.__file__).parent / ".mim" / "configs"


@dataclass(frozen=True)
class Scale:
    """Where the data is and how big the runs are. `smoke` values shrink every row alike."""

    name: str  # "full" or "smoke"
    data_root: Path
    train_ann: str
    train_img: str
    val_ann: str
    val_img: str
    classes: tuple[str, ...] | None = None  # None: the dataset's own (COCO's 80)
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


def full_scale(coco_root: Path, recipe_splits: tuple[str, str] = ("train2017", "val2017")) -> Scale:
    train, val = recipe_splits
    return Scale("full", coco_root, f"annotations/instances_{train}.json", f"{train}/",
                 f"annotations/instances_{val}.json", f"{val}/")


def smoke_scale(dataset_root: Path) -> Scale:
    return Scale("smoke", dataset_root, "annotations/instances_train.json", "train/",
                 "annotations/instances_val.json", "val/", classes=CLASSES, epochs=12, images=128, width=64,
                 lr_per_image=0.005, warmup_iters=50, clip_grad=35.0)


# ---- models --------------------------------------------------------------------------------------
def _mask_rcnn(options: dict[str, Any]) -> dict:
    from mmengine.config import Config

    cfg = Config.fromfile(str(mmdet_config_dir() / "mask_rcnn" / "mask-rcnn_r50_fpn_1x_coco.py")).to_dict()
    rcnn = cfg["model"]["train_cfg"]["rcnn"]
    rcnn["sampler"] = _recording(rcnn["sampler"], "rcnn")
    return cfg


def _r3_cnn(o: dict[str, Any]) -> dict:
    """R^3-CNN on the authors' base (HTC without semantic): H pairs of Shared2FC bbox head and
    R3MaskHead, loop t with IoU threshold u_t and loss weight alpha_t."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(mmdet_config_dir() / "htc" / "htc-without-semantic_r50_fpn_1x_coco.py")).to_dict()
    model = cfg["model"]
    model["type"] = "CascadeRCNN"  # the HTC detector type asks for a semantic branch we do not have
    htc = model["roi_head"]
    head_of_loop = [ord(c) - ord("a") for c in o["alternation"]]
    heads = max(head_of_loop) + 1
    template = model["train_cfg"]["rcnn"][0]
    loops = []
    for t, iou in enumerate(o["iou_thresholds"]):
        loop = copy.deepcopy(template)
        loop["assigner"].update(pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou)
        loop["sampler"] = _recording(loop["sampler"], f"loop{t + 1}")
        loops.append(loop)
    model["train_cfg"]["rcnn"] = loops
    mask_head = {**htc["mask_head"][0], "type": "R3MaskHead"}
    del mask_head["with_conv_res"]
    model["roi_head"] = dict(
        type="R3RoIHead",
        train_loops=o["loops"],
        eval_loops=o["eval_loops"],
        head_of_loop=head_of_loop,
        loop_loss_weights=o["loss_weights"],
        mask_loop=o["mask_loop"],
        bbox_roi_extractor=htc["bbox_roi_extractor"],
        # pair k regresses with HTC's stage-k coder (the authors' 2-pair configs do the same)
        bbox_head=[copy.deepcopy(htc["bbox_head"][k]) for k in range(heads)],
        mask_roi_extractor=htc["mask_roi_extractor"],
        mask_head=[copy.deepcopy(mask_head) for _ in range(heads)],
    )
    return cfg


def _recording(sampler: dict, series: str) -> dict:
    return dict(type="IoURecordingSampler", series=series, sampler=sampler)


MODEL_CONFIGS = {"mask_rcnn": _mask_rcnn, "r3_cnn": _r3_cnn}


# ---- recipe and scale ----------------------------------------------------------------------------
def _walk(node: Any, fn) -> None:
    """Call fn on every dict inside node (depth first)."""
    if isinstance(node, dict):
        fn(node)
        for v in node.values():
            _walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            _walk(v, fn)


def _set_where(node: Any, type_name: str, **values: Any) -> None:
    """Update every dict of type `type_name` inside node."""
    _walk(node, lambda d: d.get("type") == type_name and d.update(values))


def _apply_recipe(cfg: dict, recipe: dict[str, Any], epochs: int) -> None:
    """The paper's recipe; with `epochs` (> 0) the schedule is shortened, its lr steps scaled alike."""
    steps = list(recipe["lr_steps"])
    if epochs:
        steps = [max(1, round(s * epochs / recipe["epochs"])) for s in steps]
    epochs = epochs or recipe["epochs"]
    cfg["train_cfg"] = dict(type="EpochBasedTrainLoop", max_epochs=epochs,
                            val_interval=min(recipe["val_interval"], epochs))
    cfg["optim_wrapper"] = dict(type="OptimWrapper", optimizer=dict(recipe["optimizer"]))
    cfg["randomness"] = dict(seed=recipe["seed"])
    cfg["param_scheduler"] = [
        dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=recipe["warmup_iters"]),
        dict(type="MultiStepLR", begin=0, end=epochs, by_epoch=True, milestones=steps, gamma=0.1),
    ]
    cfg["train_dataloader"]["batch_size"] = recipe["images_per_gpu"]
    gpus = recipe["nodes"] * recipe["gpus_per_node"]
    # The paper's total batch: on another number of GPUs the lr is scaled linearly (and flagged).
    cfg["auto_scale_lr"] = dict(enable=True, base_batch_size=gpus * recipe["images_per_gpu"])
    _set_where(cfg, "Resize", scale=tuple(recipe["image_scale"]))


def _apply_data(cfg: dict, scale: Scale) -> None:
    root = str(scale.data_root).rstrip("/") + "/"
    for loader, ann, img in (("train_dataloader", scale.train_ann, scale.train_img),
                             ("val_dataloader", scale.val_ann, scale.val_img)):
        ds = cfg[loader]["dataset"]
        ds.update(data_root=root, ann_file=ann, data_prefix=dict(img=img))
        if scale.classes:
            ds["metainfo"] = dict(classes=scale.classes)
    cfg["test_dataloader"] = copy.deepcopy(cfg["val_dataloader"])
    # CocoMetric does not join ann_file with data_root.
    cfg["val_evaluator"]["ann_file"] = root + scale.val_ann
    cfg["test_evaluator"] = copy.deepcopy(cfg["val_evaluator"])


def _apply_smoke(cfg: dict, scale: Scale, recipe: dict[str, Any]) -> None:
    model = cfg["model"]
    n = len(scale.classes or ())
    _walk(model, lambda d: "num_classes" in d and d.update(num_classes=n))
    # ResNet-18 from scratch: nothing pretrained to freeze or to keep the BN statistics of.
    model["backbone"].update(depth=18, init_cfg=None, frozen_stages=-1, norm_eval=False)
    model["neck"]["in_channels"] = [64, 128, 256, 512]
    w = scale.width

    def narrow(d: dict) -> None:  # the paper's 256-channel neck and heads (1024-wide fcs) at width w
        for key in ("in_channels", "out_channels", "feat_channels", "conv_out_channels"):
            if d.get(key) == 256:
                d[key] = w
        if d.get("fc_out_channels") == 1024:
            d["fc_out_channels"] = 4 * w

    for part in ("neck", "rpn_head", "roi_head"):
        _walk(model[part], narrow)
    tr, te = model["train_cfg"], model["test_cfg"]
    tr["rpn_proposal"].update(nms_pre=scale.proposals_train, max_per_img=scale.proposals_train)
    te["rpn"].update(nms_pre=scale.proposals_test, max_per_img=scale.proposals_test)
    _set_where(tr["rcnn"], "RandomSampler", num=scale.rcnn_samples)
    _set_where(model["roi_head"], "RoIAlign", sampling_ratio=scale.roi_sampling_ratio)
    _set_where(cfg, "Resize", scale=(scale.images, scale.images))
    cfg["train_cfg"]["val_interval"] = cfg["train_cfg"]["max_epochs"]  # evaluate once, at the end
    cfg["param_scheduler"][0]["end"] = scale.warmup_iters
    cfg["optim_wrapper"]["optimizer"]["lr"] = scale.lr_per_image * recipe["images_per_gpu"]
    cfg["auto_scale_lr"]["base_batch_size"] = recipe["images_per_gpu"]  # the lr above is for one process
    if scale.clip_grad:  # from scratch on tiny data the first iterations can explode without it
        cfg["optim_wrapper"]["clip_grad"] = dict(max_norm=scale.clip_grad, norm_type=2)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].update(num_workers=0, persistent_workers=False)
    cfg["train_dataloader"]["dataset"]["filter_cfg"]["min_size"] = 4
    cfg["default_hooks"]["logger"]["interval"] = 10
    cfg["default_hooks"]["checkpoint"]["max_keep_ckpts"] = 1


def build_config(row: Row, scale: Scale) -> dict:
    """The complete config of one row, as a plain dict."""
    cfg = MODEL_CONFIGS[row.model](row.options)
    _apply_recipe(cfg, row.recipe, scale.epochs)
    _apply_data(cfg, scale)
    if scale.name == "smoke":
        _apply_smoke(cfg, scale, row.recipe)
    cfg["custom_imports"] = dict(imports=[PLUGINS], allow_failed_imports=False)
    cfg["custom_hooks"] = [*cfg.get("custom_hooks", []), dict(type="IoUHistogramHook")]
    cfg["env_cfg"]["dist_cfg"]["backend"] = "nccl"  # the job switches to gloo where there is no GPU
    return cfg


@dataclass(frozen=True)
class RowConfig:
    """One row's config on disk. `key` identifies what the row runs (<model>-<hash of its config>);
    `train_key` the training it needs. They differ for an evaluation-only row, which evaluates the
    training of `train_path` with its own test-time settings."""

    plan: str
    row: int
    model: str
    label: str
    path: Path
    key: str
    train_path: Path
    train_key: str

    @property
    def eval_only(self) -> bool:
        return self.key != self.train_key


def config_text(cfg: dict) -> str:
    from mmengine.config import Config

    return Config(cfg).pretty_text


def _write(plan: Plan, row: Row, scale: Scale, folder: Path, what: str) -> tuple[Path, str]:
    text = config_text(build_config(row, scale))
    digest = hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]
    path = folder / f"{plan.name.replace('/', '-')}-row{row.number}{what}-{digest}.py"
    if not path.exists():
        header = f"# {plan.name} row {row.number}{what}: {row.label} ({scale.name} scale), generated by sbrrepro\n"
        atomic_write(path, header + text)
    return path, f"{row.model}-{digest}"


def write_configs(plan: Plan, scale: Scale, folder: Path) -> list[RowConfig]:
    """Write each row's config as <paper>-<table>-row<N>-<hash>.py (identical content, identical
    hash), and for an evaluation-only row also the config of the training it evaluates (-train-)."""
    from .zoo import MODELS

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for row in plan.rows:
        path, key = _write(plan, row, scale, folder, "")
        training = dataclasses.replace(row, options=MODELS[row.model].training(row.options))
        train_path, train_key = (path, key) if training == row else _write(plan, training, scale, folder, "-train")
        if train_key == key:
            train_path = path
        out.append(RowConfig(plan.name, row.number, row.model, row.label, path, key, train_path, train_key))
    return out
