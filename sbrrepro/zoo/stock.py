"""MMDetection's own models, as baselines: each starts from its shipped ResNet-50 FPN config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..schema import Field
from . import Model
from ._frameworks import ALL as ERA_ALL
from ._parts import (
    ADDON,
    BACKBONE,
    BACKBONE_NAMES,
    GROIE,
    HTC,
    HTC_SEMANTIC,
    MASK_RCNN,
    SEMANTIC_HEADS,
    Options,
    backbone_name,
    finish_groie,
    hours_per_epoch,
    narrow_backbone,
    narrow_relay,
    one_rcnn_stage,
    stock,
    three_stages,
    two_stage,
)


def _condinst(o: Options) -> dict:
    """MMDetection's CondInst model on Mask R-CNN's data pipeline, so that it gets the same
    single-scale recipe as the other rows (its own config trains multi-scale for 90k iterations)."""
    cfg = stock(MASK_RCNN)
    cfg["model"] = stock("condinst/condinst_r50_fpn_ms-poly-90k_coco_instance.py")["model"]
    return cfg


MMDET = "mmdet::"  # a `base` naming a config shipped with MMDetection, by its path in MMDetection's configs


def _config(o: Options) -> dict:
    """Any MMDetection config, as it is: one shipped with MMDetection or a file of the user's."""
    if o["base"].startswith(MMDET):
        return stock(o["base"][len(MMDET):])
    from mmengine.config import Config

    return Config.fromfile(o["base"]).to_dict()


def _from_base(base: str, folder: Path) -> Options | str:
    """A plan row's `base`: a config MMDetection ships, or a file resolved from the plan's folder."""
    if base.startswith(MMDET):
        try:
            stock(base[len(MMDET):])
        except FileNotFoundError:
            return (f"{base}: MMDetection ships no such config (paths as in its configs folder, e.g. "
                    f"{MMDET}{MASK_RCNN})")
        return {"base": base}
    path = (folder / base).resolve()
    return {"base": str(path)} if path.is_file() else f"{path} is missing (a config file, relative to the plan)"


AS_CONFIGURED = "as_configured"  # the backbone of a config's own schedule: whichever it builds


def _own_schedule(cfg: dict) -> dict[str, Any] | str:
    """What a config's own schedule is, in a recipe's terms (for costs, the smoke scale and reports;
    the config's own schedule is what trains)."""
    try:
        steps = next(s["milestones"] for s in cfg["param_scheduler"] if s["type"] == "MultiStepLR")
        warmup = next((s for s in cfg["param_scheduler"] if s["type"] == "LinearLR"), None)
        optimizer = cfg["optim_wrapper"]["optimizer"]
        batch = cfg["train_dataloader"]["batch_size"]
        resize = next(t["scale"] for t in cfg["train_dataloader"]["dataset"]["pipeline"] if t["type"] == "Resize")
        return dict(dataset="coco2017", backbone=AS_CONFIGURED, epochs=cfg["train_cfg"]["max_epochs"],
                    lr_steps=list(steps), warmup_iters=warmup["end"] if warmup else 0,
                    warmup_ratio=warmup["start_factor"] if warmup else 1.0,
                    optimizer={k: optimizer[k] for k in ("type", "lr", "momentum", "weight_decay")},
                    images_per_gpu=batch, nodes=1,
                    gpus_per_node=max(1, cfg.get("auto_scale_lr", {}).get("base_batch_size", 16) // batch),
                    image_scale=list(resize))
    except (KeyError, StopIteration, TypeError):
        return ("this base config's schedule is not an epoch schedule with MultiStepLR, SGD and a Resize: give the "
                "plan a recipe")


def _htc(o: Options) -> dict:
    """HTC as shipped, with or without its semantic branch, with a RoI head that averages every
    stage's mask at test time (MMDetection 3.3's keeps the last stage's only)."""
    cfg = two_stage(HTC_SEMANTIC if o["semantic"] else HTC, o)
    cfg["model"]["roi_head"]["type"] = "HTCMeanMaskRoIHead"
    return cfg


MODELS = [
    # GC-Net on Mask R-CNN as the SBR-CNN authors link it: MMDetection's config without SyncBN.
    Model("mask_rcnn", "Mask R-CNN", "Mask R-CNN, ResNet-FPN (MMDetection's stock model)",
          lambda o: two_stage(MASK_RCNN, o, sync_bn=False), options={**ADDON, **GROIE}, finish=finish_groie,
          gpu_hours_per_epoch=lambda o: hours_per_epoch(0), iou_series=one_rcnn_stage, era_settings=ERA_ALL),
    Model("faster_rcnn", "Faster R-CNN", "Faster R-CNN, ResNet-FPN; with GRoIE for SBR-CNN Tables 8-10",
          lambda o: two_stage("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", o), options=dict(GROIE),
          finish=finish_groie, gpu_hours_per_epoch=lambda o: hours_per_epoch(0), iou_series=one_rcnn_stage,
          era_settings=ERA_ALL),
    Model("htc", "HTC", "Hybrid Task Cascade, without its semantic branch unless asked", _htc,
          options={**ADDON, **BACKBONE, "semantic": Field(bool, False, None, "HTC's semantic segmentation branch, "
                                                          "trained on COCO-stuff's maps")},
          gpu_hours_per_epoch=lambda o: hours_per_epoch(3), iou_series=three_stages, backbone=backbone_name,
          backbones=BACKBONE_NAMES, smoke=(narrow_backbone,), semantic_heads=SEMANTIC_HEADS),
    Model("cascade_mask_rcnn", "Cascade Mask R-CNN", "Cascade Mask R-CNN, ResNet-FPN (MMDetection's stock model)",
          lambda o: two_stage("cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py", o),
          gpu_hours_per_epoch=lambda o: hours_per_epoch(3), iou_series=three_stages),
    Model("grid_rcnn", "Grid R-CNN", "Grid R-CNN with its GN head, ResNet-FPN; with GRoIE as the box and grid "
          "extractors", lambda o: two_stage("grid_rcnn/grid-rcnn_r50_fpn_gn-head_1x_coco.py", o), options=dict(GROIE),
          finish=finish_groie, gpu_hours_per_epoch=lambda o: hours_per_epoch(0), iou_series=one_rcnn_stage),
    Model("condinst", "CondInst", "CondInst, ResNet-FPN (MMDetection's model)", _condinst,
          gpu_hours_per_epoch=lambda o: hours_per_epoch(0)),
    # A plan row's `base:` (mmdet::<path> or a config file): its backbone is whatever the config builds,
    # and any of MMDetection's modules that the other models narrow at smoke scale may be in it.
    Model("config", "Config", "any MMDetection config, as a plan row's `base` names it", _config,
          options={"base": Field(str, MMDET + MASK_RCNN, help="mmdet::<path in MMDetection's configs>, or a config "
                                 "file")},
          backbone=lambda o: None, backbones=(AS_CONFIGURED,), smoke=(narrow_backbone, narrow_relay),
          semantic_heads=SEMANTIC_HEADS, from_base=_from_base, own_schedule=_own_schedule),
]
