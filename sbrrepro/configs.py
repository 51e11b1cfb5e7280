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
def _stock(path: str) -> dict:
    from mmengine.config import Config

    return Config.fromfile(str(mmdet_config_dir() / path)).to_dict()


def _recording(sampler: dict, series: str) -> dict:
    return dict(type="IoURecordingSampler", series=series, sampler=sampler)


def _record_rcnn(model: dict) -> None:
    """Record the IoUs of the positive training RoIs of every R-CNN stage (Fig. 3)."""
    rcnn = model["train_cfg"]["rcnn"]
    if isinstance(rcnn, dict):
        rcnn["sampler"] = _recording(rcnn["sampler"], "rcnn")
    else:
        for i, stage in enumerate(rcnn):
            stage["sampler"] = _recording(stage["sampler"], f"stage{i + 1}")


def _addon(model: dict, addon: str) -> None:
    """SBR-CNN Table 11's backbones: GC-Net (context blocks r4, SyncBN) or DCN in stages c3-c5."""
    backbone = model["backbone"]
    if addon == "gcnet":
        backbone.update(norm_cfg=dict(type="SyncBN", requires_grad=True), norm_eval=False, plugins=[
            dict(cfg=dict(type="ContextBlock", ratio=1.0 / 4), stages=(False, True, True, True),
                 position="after_conv3")])
    elif addon == "dcn":
        backbone.update(dcn=dict(type="DCN", deform_groups=1, fallback_on_stride=False),
                        stage_with_dcn=(False, True, True, True))


def _groie(extractor: dict, o: dict[str, Any]) -> dict:
    """GRoIE in place of a single-level RoI extractor: every FPN level, pre-processed, summed,
    post-processed."""
    from .models.groie import groie_module

    if not o["groie"]:
        return extractor
    channels = extractor["out_channels"]
    return dict(type="GRoIE", roi_layer=extractor["roi_layer"], out_channels=channels,
                featmap_strides=extractor["featmap_strides"],
                pre_cfg=groie_module(o["groie_pre"], channels) if o["groie_pre"] else None,
                post_cfg=groie_module(o["groie_post"], channels) if o["groie_post"] else None)


def _two_stage(path: str, o: dict[str, Any]) -> dict:
    cfg = _stock(path)
    model = cfg["model"]
    _record_rcnn(model)
    _addon(model, o.get("addon", "none"))
    head = model["roi_head"]
    if "groie" in o:
        for key in ("bbox_roi_extractor", "mask_roi_extractor"):
            if key in head:
                head[key] = _groie(head[key], o)
    return cfg


def _mask_rcnn(o: dict[str, Any]) -> dict:
    return _two_stage("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", o)


def _faster_rcnn(o: dict[str, Any]) -> dict:
    return _two_stage("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", o)


def _htc(o: dict[str, Any]) -> dict:
    return _two_stage("htc/htc-without-semantic_r50_fpn_1x_coco.py", o)


def _condinst(o: dict[str, Any]) -> dict:
    """MMDetection's CondInst model on Mask R-CNN's data pipeline, so that it gets the same
    single-scale recipe as the other rows (its own config trains multi-scale for 90k iterations)."""
    cfg = _stock("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py")
    cfg["model"] = _stock("condinst/condinst_r50_fpn_ms-poly-90k_coco_instance.py")["model"]
    return cfg


def _fcc(head: dict, l2c: str, post_reduce: bool, nl_before: bool, nl_after: bool) -> dict:
    """A head whose two shared FCs become L2C convolutions (SBR-CNN Sec. 3.2, Fig. 4)."""
    return {**head, "convs": l2c, "post_reduce": post_reduce, "nl_before": nl_before, "nl_after": nl_after}


def _bbox_head(htc_head: dict, o: dict[str, Any]) -> dict:
    head = copy.deepcopy(htc_head)
    if o["l2c"] == "none":
        return head
    for key in ("num_shared_convs", "num_shared_fcs", "num_cls_convs", "num_cls_fcs", "num_reg_convs",
                "num_reg_fcs", "conv_out_channels", "fc_out_channels"):
        head.pop(key, None)
    return _fcc({**head, "type": "FCCBBoxHead"}, o["l2c"], o["l2c_post_reduce"], o["nl_before"], o["nl_after"])


def _mask_iou_head(o: dict[str, Any]) -> dict:
    base = dict(num_convs=4, roi_feat_size=14, in_channels=256, conv_out_channels=256, num_classes=80)
    if o["mask_iou"] == "fc":  # the original branch of Mask Scoring R-CNN
        return dict(type="MaskIoUHead", num_fcs=2, fc_out_channels=1024, **base)
    return _fcc({"type": "FCCMaskIoUHead", **base}, o["mask_iou"], True, o["mask_iou_nl_before"],
                o["mask_iou_nl_after"])


def _r3_cnn(o: dict[str, Any]) -> dict:
    """R^3-CNN on the authors' base (HTC without semantic): H pairs of bbox head and R3MaskHead,
    loop t with IoU threshold u_t and loss weight alpha_t; optionally FCC heads, a Mask IoU branch,
    GRoIE and a GC-Net / DCN backbone."""
    cfg = _stock("htc/htc-without-semantic_r50_fpn_1x_coco.py")
    model = cfg["model"]
    model["type"] = "CascadeRCNN"  # the HTC detector type asks for a semantic branch we do not have
    _addon(model, o["addon"])
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
        bbox_roi_extractor=_groie(htc["bbox_roi_extractor"], o),
        # pair k regresses with HTC's stage-k coder (the authors' 2-pair configs do the same)
        bbox_head=[_bbox_head(htc["bbox_head"][k], o) for k in range(heads)],
        mask_roi_extractor=_groie(htc["mask_roi_extractor"], o),
        mask_head=[copy.deepcopy(mask_head) for _ in range(heads)],
    )
    if o["mask_iou"] != "none":
        model["roi_head"]["mask_iou_head"] = _mask_iou_head(o)
        loops[o["loops"] - 1]["mask_thr_binary"] = 0.5  # the Mask IoU targets binarise the last loop's masks
    return cfg


def _head_layer(o: dict[str, Any]) -> dict:
    """Table 1: only the detection head, whose shared layers are counted one by one."""
    head = _stock("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py")["model"]["roi_head"]["bbox_head"]
    if o["head"] != "fc":
        head = _bbox_head(head, {"l2c": o["head"], "l2c_post_reduce": True, "nl_before": False,
                                 "nl_after": False})
    return {"model": head, "layer": o["layer"]}


def _rpn_anchors(o: dict[str, Any]) -> dict:
    """Fig. 1: only the anchors of Mask R-CNN's RPN."""
    rpn = _stock("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py")["model"]["rpn_head"]
    return {"anchor_generator": rpn["anchor_generator"]}


MODEL_CONFIGS = {"mask_rcnn": _mask_rcnn, "faster_rcnn": _faster_rcnn, "htc": _htc, "condinst": _condinst,
                 "r3_cnn": _r3_cnn, "sbr_cnn": _r3_cnn, "head_layer": _head_layer,
                 "rpn_anchors": _rpn_anchors}


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
    model["neck"]["in_channels"] = [64, 128, 256, 512]
    w = scale.width

    def narrow(d: dict) -> None:  # the paper's 256-channel neck and heads (1024-wide fcs) at width w
        for key in ("in_channels", "out_channels", "feat_channels", "conv_out_channels"):
            if d.get(key) == 256:
                d[key] = w
        if d.get("fc_out_channels") == 1024:
            d["fc_out_channels"] = 4 * w

    for part, sub in model.items():
        if part not in ("backbone", "data_preprocessor", "train_cfg", "test_cfg"):
            _walk(sub, narrow)
    tr, te = model.get("train_cfg") or {}, model.get("test_cfg") or {}
    if "rpn_proposal" in tr:  # two-stage detectors
        tr["rpn_proposal"].update(nms_pre=scale.proposals_train, max_per_img=scale.proposals_train)
        te["rpn"].update(nms_pre=scale.proposals_test, max_per_img=scale.proposals_test)
        _set_where(tr["rcnn"], "RandomSampler", num=scale.rcnn_samples)
    _set_where(model, "RoIAlign", sampling_ratio=scale.roi_sampling_ratio)
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


def build_model(cfg: dict) -> Any:
    """The model of a config, with sbrrepro's plugins registered and MMDetection's registries as a
    Runner sets them (weights not initialised)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import sbrrepro.models  # noqa: F401  (registers the plugins)

    register_all_modules()
    return MODELS.build(Config(cfg).model)


def build_config(row: Row, scale: Scale) -> dict:
    """The complete config of one row, as a plain dict."""
    from .zoo import MODELS

    cfg = MODEL_CONFIGS[row.model](row.options)
    if not MODELS[row.model].trains:
        return {**cfg, "custom_imports": dict(imports=[PLUGINS], allow_failed_imports=False)}
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
