"""The model as plans name it: MMDetection's Mask R-CNN whose box head is `TemperedBBoxHead`.

Plain dicts only, as every zoo module: sbrrepro builds configs without torch or the plugins."""

from __future__ import annotations

from sbrrepro.zoo import Model, Options, shipped


def _build(o: Options) -> dict:
    cfg = shipped("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py")
    cfg["model"]["roi_head"]["bbox_head"]["type"] = "TemperedBBoxHead"
    return cfg


MODELS = [
    Model("tempered_mask_rcnn", "Tempered Mask R-CNN",
          "Mask R-CNN whose box classifier's logits are divided by a learned temperature", _build),
]
