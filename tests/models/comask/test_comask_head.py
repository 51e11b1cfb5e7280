"""CoMask's RoI head (sbrrepro/models/comask/roi_head.py, cl_head.py) in small detectors (ResNet-18, 64-channel
FPN, 3 classes) that train one step with a gradient on every parameter (DDP without find_unused_parameters)
and predict masks."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mmdet")

from steps import CLASSES, IMAGE, build, dead_layers, forward_tensor, predict, shipped_model, train_step  # noqa: E402

WIDTH, FC = 64, 128  # GN(32) needs a multiple of 32


def _extractor(layer: dict | None) -> dict:
    cfg = dict(type="RatioRoIExtractor", out_channels=WIDTH, featmap_strides=[4, 8, 16, 32])
    return cfg if layer is None else dict(cfg, roi_layer=layer)


def roi_head(roi_pool: str = "drp", collaborative: bool = True) -> dict:
    drp = dict(type="DiscriminativeRoIPool", output_size=7, output_channels=WIDTH, deform_fc_channels=FC)
    return dict(type="CoMaskRoIHead", roi_pool=roi_pool, collaborative=collaborative,
                bbox_roi_extractor=_extractor(drp if roi_pool == "drp" else None),
                bbox_head=dict(type="Shared2FCBBoxHead", with_reg=False, in_channels=WIDTH, fc_out_channels=FC,
                               roi_feat_size=7, num_classes=CLASSES,
                               loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=2.0)),
                mask_roi_extractor=_extractor(dict(type="RoIAlign", output_size=14, sampling_ratio=2)),
                mask_head=dict(type="CoMaskCLHead", num_classes=CLASSES, in_channels=WIDTH, conv_out_channels=WIDTH,
                               fc_out_channels=FC))


def model_cfg(**kwargs) -> dict:
    """MMDetection's Mask R-CNN, shrunk, with CoMask's RoI head."""
    model = shipped_model("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", width=WIDTH, fc=FC)
    model["roi_head"] = roi_head(**kwargs)
    train, test = model["train_cfg"], model["test_cfg"]
    train["rcnn"].update(jitter=0.15, max_num_reg=192, mask_thr_binary=0.5)
    # max_per_img 30, not 100: the CL head runs twice on every detection, slow on a shared CPU
    test["rcnn"].update(nms=dict(type="nms", iou_threshold=0.3), max_per_img=30, box_weight_thr=0.5,
                        mask_iou_weight=0.3)
    return model


# zero at the first step by construction, as in the authors' code: the offset FCs before the zero-initialised
# last one, and AWPool's InstanceNorm (its constant output's weights cancel in the normalised average)
ZERO_AT_INIT = (".offset_fc.0", ".offset_fc.2", ".pool.norm")


@pytest.mark.parametrize(("collaborative", "roi_pool"), [(True, "drp"), (False, "drp"), (True, "roialign"),
                                                          (False, "roialign")],
                         ids=["comask", "wo-cl", "comask-roialign", "wo-cl-roialign"])
def test_detector(collaborative, roi_pool):
    cfg = model_cfg(roi_pool=roi_pool, collaborative=collaborative)
    model = build(cfg)
    head = model.roi_head
    assert (head.mask_head.fg_map, head.mask_head.conv_fg is None) == (not collaborative, collaborative)
    layer = type(head.bbox_roi_extractor.roi_layers[0]).__name__
    assert layer == {"drp": "DiscriminativeRoIPool", "roialign": "RoIAlign"}[roi_pool]
    losses = train_step(cfg, model)
    assert {"loss_cls", "acc", "loss_bbox", "loss_mask", "loss_mask_iou"} <= set(losses)
    assert ("loss_fg" in losses) == (not collaborative)
    assert not dead_layers(model, ZERO_AT_INIT), dead_layers(model, ZERO_AT_INIT)
    for r in predict(cfg, model):
        inst = r.pred_instances
        assert len(inst.bboxes) <= 30 and inst.masks.dtype == torch.bool
        assert (inst.bboxes[:, 2:] > inst.bboxes[:, :2]).all() and (inst.bboxes >= 0).all()
        assert (inst.bboxes <= IMAGE).all()
    ((cls_score, dist, masks),) = forward_tensor(cfg, model)
    assert cls_score.shape[1] == CLASSES + 1 and dist.shape[1:] == (4, 7, 7) and masks.shape[1:] == (CLASSES, 28, 28)


def test_no_positives_still_reach_every_parameter():
    """Images without objects: zero CL losses, every parameter still in the graph (DDP)."""
    cfg = model_cfg()
    losses = train_step(cfg, build(cfg), num_items=[0, 0])
    assert all(float(losses[k].detach()) == 0.0 for k in ("loss_bbox", "loss_mask", "loss_mask_iou"))


def test_cl_head_sees_at_most_max_num_reg_jittered_positives():
    cfg = model_cfg()
    cfg["train_cfg"]["rcnn"]["max_num_reg"] = 5
    model = build(cfg)
    seen, forward = [], model.roi_head.mask_head.forward

    def spy(x, labels=None):
        seen.append(len(x))
        return forward(x, labels)

    model.roi_head.mask_head.forward = spy
    train_step(cfg, model)
    assert seen == [5]


REJECTED = {
    "roi-pool": (lambda roi: roi.update(roi_pool="max"), "roi_pool"),
    "with-reg": (lambda roi: roi["bbox_head"].update(with_reg=True), "with_reg=False"),
    "layer": (lambda roi: roi["bbox_roi_extractor"].update(roi_layer=dict(type="RoIAlign", output_size=7)),
              "DiscriminativeRoIPool"),
    "fg-map": (lambda roi: roi["mask_head"].update(fg_map=True), "contradicts"),
}


@pytest.mark.parametrize("case", list(REJECTED), ids=list(REJECTED))
def test_rejects(case):
    change, message = REJECTED[case]
    cfg = model_cfg()
    change(cfg["roi_head"])
    with pytest.raises(ValueError, match=message):
        build(cfg)
