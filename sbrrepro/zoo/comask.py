"""CoMask (Chen et al., "Accurate Instance Segmentation via Collaborative Learning"): MMDetection's
Mask R-CNN with the MFPN neck (a multi-scale feature enhancement module, MSFEM, per FPN level) and
the collaborative-learning RoI head (dense per-pixel boxes averaged with the coarse mask's weights,
then a second pass of the head on the refined box for the final mask). The paper's text decides
where it is explicit, the authors' public code where it is silent.
"""

from __future__ import annotations

import copy

from ..schema import Field, one_of
from . import Model
from ._parts import (
    BACKBONE,
    BACKBONE_NAMES,
    MASK_RCNN,
    Options,
    backbone,
    backbone_name,
    narrow_backbone,
    one_rcnn_stage,
    record_rcnn,
    stock,
)

C = 256  # the paper's feature width
# RoIs map to FPN levels by their area against their own image's (the authors' code), for both branches
EXTRACTOR = dict(type="RatioRoIExtractor", out_channels=C, featmap_strides=[4, 8, 16, 32], level_mapping="ratio",
                 max_level=3)
POOLS = {
    # D2Det's discriminative RoI pooling, as the authors' COCO config sets it
    "drp": dict(type="DiscriminativeRoIPool", output_size=7, output_channels=C, sampling_ratio=1, gamma=0.1,
                offset_size=3, num_offset_fcs=3, deform_fc_channels=1024, weighting="awp"),
    "roialign": dict(type="RoIAlign", output_size=7, sampling_ratio=2),
}


# the CL head's box loss: the authors' code's in effect (mean(loss) x mean(weight), IoUs <= 0.1 raised by
# 0.1: its (N, 1) weights broadcast against its (N,) losses), or mmdet's IoU loss weighted per pixel
IOU_LOSSES = {"code": dict(type="MeanProductIoULoss", floor=0.1, loss_weight=2.0),
              "per_pixel": dict(type="IoULoss", loss_weight=2.0)}


def _head(o: Options, num_classes: int = 80) -> dict:
    """The RoI head's config, its own copy: later stages change configs in place."""
    return copy.deepcopy(dict(
        type="CoMaskRoIHead", roi_pool=o["roi_pool"], collaborative=o["collaborative"],
        bbox_roi_extractor=dict(EXTRACTOR, roi_layer=POOLS[o["roi_pool"]]),
        # classification only: the box comes from the collaborative-learning head (loss weight 2, as the code)
        bbox_head=dict(type="Shared2FCBBoxHead", with_reg=False, in_channels=C, fc_out_channels=1024, roi_feat_size=7,
                       num_classes=num_classes,
                       loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=2.0)),
        mask_roi_extractor=dict(EXTRACTOR, roi_layer=dict(type="RoIAlign", output_size=14, sampling_ratio=2)),
        mask_head=dict(type="CoMaskCLHead", num_classes=num_classes, in_channels=C, conv_out_channels=C,
                       roi_feat_size=14, num_convs=10, num_iou_convs=2, fc_out_channels=1024,
                       norm_cfg=dict(type="GN", num_groups=32), weight_thr=0.5, mask_to_grid="avg",
                       detach_box_weights=False,
                       loss_bbox=IOU_LOSSES[o["iou_loss"]],
                       loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0),
                       loss_mask_iou=dict(type="MSELoss", loss_weight=0.5),
                       loss_fg=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0))))


def _build(o: Options) -> dict:
    cfg = stock(MASK_RCNN)
    model = cfg["model"]
    backbone(model, o)
    model["neck"] = dict(type="MFPN", in_channels=[256, 512, 1024, 2048], out_channels=C, num_outs=5,
                         branches=o["branches"], variant=o["msfem_variant"])
    model["roi_head"] = _head(o)
    train, test = model["train_cfg"], model["test_cfg"]
    train["rpn_proposal"].update(nms_pre=2000, max_per_img=2000)
    test["rpn"].update(nms_pre=1000, max_per_img=700)
    # proposals jittered by 15% before the CL head, at most 192 of them per batch (the authors' code)
    train["rcnn"].update(jitter=0.15, max_num_reg=192, mask_thr_binary=0.5)
    train["rcnn"]["assigner"]["match_low_quality"] = True
    # classification NMS at IoU 0.3; mask score = class score + 0.3 x the predicted mask IoU (the code);
    # the refined box averages the pixels whose mask confidence passes 0.5 (the paper); the second pass runs
    # on it unclipped (the code: its clamp acts on a copy)
    test["rcnn"] = dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.3), max_per_img=100, mask_thr_binary=0.5,
                        box_weight_thr=0.5, mask_iou_weight=0.3, clip_refined=False)
    record_rcnn(model)
    return cfg


def _narrow_pool(model: dict, width: int) -> None:
    """D2Det's discriminative pooling at smoke width: it pools the neck's width channels through fcs
    4 x width wide (the paper's 256 and 1024)."""
    pool = model["roi_head"]["bbox_roi_extractor"]["roi_layer"]
    if pool["type"] == "DiscriminativeRoIPool":
        pool.update(output_channels=width, deform_fc_channels=4 * width)


def _finish(o: Options) -> Options | str:
    if o["msfem_variant"] == "code" and o["branches"] < 3:
        return (f"the authors' code's MSFEM is the identity below 3 branches (branches: {o['branches']}): "
                "msfem_variant: paper builds them")
    return o


MODELS = [
    Model("comask", "CoMask", "CoMask: the MFPN neck and the collaborative-learning head on Mask R-CNN", _build,
          options={**BACKBONE,
                   "branches": Field(int, 4, one_of(1, 2, 4), "MSFEM branches (CoMask_1, _2, _4 of Table 2)"),
                   "msfem_variant": Field(str, "code", one_of("paper", "code"),
                                          "the authors' code's MSFEM (SIM with RCA, in place of the FPN's output "
                                          "convs, as their COCO config's ..._4branch_10convs_rca run; the identity "
                                          "below 3 branches), or the paper's after each FPN level (Eqs. 1-7)"),
                   "iou_loss": Field(str, "code", one_of(*IOU_LOSSES),
                                     "the CL head's IoU loss: the authors' code's in effect (mean(loss) x "
                                     "mean(weight), IoUs <= 0.1 raised by 0.1), or mmdet's weighted per pixel"),
                   "collaborative": Field(bool, True, None, "the box weighted by the coarse mask; false: "
                                          "'w/o CL', a separate foreground map as D2Det's"),
                   "roi_pool": Field(str, "drp", one_of(*POOLS), "the classification branch's RoI pooling: "
                                     "D2Det's discriminative pooling (the code) or RoIAlign")},
          finish=_finish, iou_series=one_rcnn_stage, backbone=backbone_name, backbones=BACKBONE_NAMES,
          smoke=(narrow_backbone, _narrow_pool),
          # the authors' 1.x config (SID_r50_mfpn_2x.py) leaves the RPN's loss at 1.x's SmoothL1 (beta 1/9) and
          # sets allowed_border 0; its proposals and matching are built as it has them (above)
          era_settings=("rpn_loss", "allowed_border")),
]
