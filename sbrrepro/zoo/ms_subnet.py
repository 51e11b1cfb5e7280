"""Multi-scale Subnetwork for RoI pooling (Linh and Arai, IJCTE 2018): Mask R-CNN whose mask branch
pools its RoIs through the multi-scale subnetwork instead of RoIAlign, on ResNet-50-C4 or
ResNet-101-FPN. No code of the authors is public: the subnetwork is built from the paper's text."""

from __future__ import annotations

from ..schema import Field, one_of
from . import Model
from ._parts import Options, hours_per_epoch, one_rcnn_stage, record_rcnn, stock

BACKBONES = {  # option -> (MMDetection's shipped Mask R-CNN, the recipe's name of its backbone)
    "r50-c4": ("mask_rcnn/mask-rcnn_r50-caffe-c4_1x_coco.py", "resnet50_c4"),
    "r101-fpn": ("mask_rcnn/mask-rcnn_r101_fpn_1x_coco.py", "resnet101_fpn"),
}


def _build(o: Options) -> dict:
    path, _ = BACKBONES[o["backbone"]]
    cfg = stock(path)
    model = cfg["model"]
    record_rcnn(model)
    if o["subnet"]:
        head = model["roi_head"]
        if o["backbone"] == "r50-c4":
            # C4 shares the box branch's RoIAlign and res5: the subnetwork feeds res5 (1024 channels
            # in and out, 14x14), which the mask head then reads, as the box head does
            width, strides = 1024, [16]
        else:
            width, strides = 256, head["mask_roi_extractor"]["featmap_strides"]
        head["mask_roi_extractor"] = dict(type="MultiScaleSubnetRoIExtractor", in_channels=width, out_channels=width,
                                          featmap_strides=strides, branch_sizes=[14, 28, 56], branch_channels=256,
                                          output_size=14, fuse_kernel=3, finest_scale=56)
    return cfg


MODELS = [
    Model("ms_subnet_mask_rcnn", "Mask R-CNN",
          "Mask R-CNN on ResNet-50-C4 or ResNet-101-FPN; with the multi-scale subnetwork as its mask RoI extractor",
          _build,
          options={"backbone": Field(str, check=one_of(*BACKBONES), help="r50-c4 or r101-fpn"),
                   "subnet": Field(bool, False, None, "the multi-scale subnetwork in the mask branch")},
          gpu_hours_per_epoch=lambda o: hours_per_epoch(0), iou_series=one_rcnn_stage,
          backbone=lambda o: BACKBONES[o["backbone"]][1], backbones=tuple(name for _, name in BACKBONES.values())),
]
