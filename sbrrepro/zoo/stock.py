"""MMDetection's own models, as baselines: each starts from its shipped ResNet-50 FPN config."""

from __future__ import annotations

from ..schema import Field
from . import Model
from ._parts import (
    ADDON,
    BACKBONE,
    GROIE,
    HTC,
    HTC_SEMANTIC,
    MASK_RCNN,
    Options,
    backbone_name,
    finish_groie,
    hours_per_epoch,
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
          gpu_hours_per_epoch=lambda o: hours_per_epoch(0), iou_series=one_rcnn_stage),
    Model("faster_rcnn", "Faster R-CNN", "Faster R-CNN, ResNet-FPN; with GRoIE for SBR-CNN Tables 8-10",
          lambda o: two_stage("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", o), options=dict(GROIE),
          finish=finish_groie, gpu_hours_per_epoch=lambda o: hours_per_epoch(0), iou_series=one_rcnn_stage),
    Model("htc", "HTC", "Hybrid Task Cascade, without its semantic branch unless asked", _htc,
          options={**ADDON, **BACKBONE, "semantic": Field(bool, False, None, "HTC's semantic segmentation branch, "
                                                          "trained on COCO-stuff's maps")},
          gpu_hours_per_epoch=lambda o: hours_per_epoch(3), iou_series=three_stages, backbone=backbone_name),
    Model("cascade_mask_rcnn", "Cascade Mask R-CNN", "Cascade Mask R-CNN, ResNet-FPN (MMDetection's stock model)",
          lambda o: two_stage("cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py", o),
          gpu_hours_per_epoch=lambda o: hours_per_epoch(3), iou_series=three_stages),
    Model("grid_rcnn", "Grid R-CNN", "Grid R-CNN with its GN head, ResNet-FPN; with GRoIE as the box and grid "
          "extractors", lambda o: two_stage("grid_rcnn/grid-rcnn_r50_fpn_gn-head_1x_coco.py", o), options=dict(GROIE),
          finish=finish_groie, gpu_hours_per_epoch=lambda o: hours_per_epoch(0), iou_series=one_rcnn_stage),
    Model("condinst", "CondInst", "CondInst, ResNet-FPN (MMDetection's model)", _condinst,
          gpu_hours_per_epoch=lambda o: hours_per_epoch(0)),
    # A plan row's `base:` (mmdet::<path> or a config file): its backbone is whatever the config builds.
    Model("config", "Config", "any MMDetection config, as a plan row's `base` names it", _config,
          options={"base": Field(str, MMDET + MASK_RCNN, help="mmdet::<path in MMDetection's configs>, or a config "
                                 "file")},
          backbone=lambda o: None),
]
