"""CoMask's RoI head (sbrrepro/models/comask/roi_head.py, cl_head.py) in small detectors (ResNet-18, 64-channel
FPN, 3 classes) that train one step with a gradient on every parameter (DDP without find_unused_parameters)
and predict masks."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mmdet")

from tests.helpers import CLASSES, IMAGE, build, dead_layers, forward_tensor, predict, shipped_model, train_step  # noqa: E402

WIDTH, FC = 64, 128  # GN(32) needs a multiple of 32


def _extractor(layer: dict | None) -> dict:
    cfg = dict(type="RatioRoIExtractor", out_channels=WIDTH, featmap_strides=[4, 8, 16, 32])
    return cfg if layer is None else dict(cfg, roi_layer=layer)


# the CL head's box loss: the authors' code's in effect (the zoo's default), or mmdet's per pixel
IOU_LOSSES = {"code": dict(type="MeanProductIoULoss", floor=0.1, loss_weight=2.0),
              "per_pixel": dict(type="IoULoss", loss_weight=2.0)}


def roi_head(roi_pool: str = "drp", collaborative: bool = True, iou_loss: str = "code") -> dict:
    drp = dict(type="DiscriminativeRoIPool", output_size=7, output_channels=WIDTH, deform_fc_channels=FC)
    return dict(type="CoMaskRoIHead", roi_pool=roi_pool, collaborative=collaborative,
                bbox_roi_extractor=_extractor(drp if roi_pool == "drp" else None),
                bbox_head=dict(type="Shared2FCBBoxHead", with_reg=False, in_channels=WIDTH, fc_out_channels=FC,
                               roi_feat_size=7, num_classes=CLASSES,
                               loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=2.0)),
                mask_roi_extractor=_extractor(dict(type="RoIAlign", output_size=14, sampling_ratio=2)),
                mask_head=dict(type="CoMaskCLHead", num_classes=CLASSES, in_channels=WIDTH, conv_out_channels=WIDTH,
                               fc_out_channels=FC, loss_bbox=IOU_LOSSES[iou_loss]))


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


@pytest.mark.parametrize(("collaborative", "roi_pool", "iou_loss"),
                         [(True, "drp", "code"), (False, "drp", "code"), (True, "roialign", "per_pixel"),
                          (False, "roialign", "per_pixel")],
                         ids=["comask", "wo-cl", "comask-roialign-per-pixel", "wo-cl-roialign-per-pixel"])
@pytest.mark.training
def test_detector(collaborative, roi_pool, iou_loss):
    cfg = model_cfg(roi_pool=roi_pool, collaborative=collaborative, iou_loss=iou_loss)
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


@pytest.mark.parametrize("clip", [False, True], ids=["code-unclipped", "clipped"])
def test_second_pass_runs_on_the_refined_box_unclipped(clip):
    """The authors' code clamps a copy of the refined boxes (`bbox_res[:, [0, 2]].clamp_`), so its second
    pass sees them as refined; the box reported (the mask's paste box) is clipped. test_cfg clip_refined:
    the second pass on the clipped box."""
    from sbrrepro.models.comask.geometry import clip_boxes

    cfg = model_cfg()
    cfg["test_cfg"]["rcnn"].update(clip_refined=clip, max_per_img=5)
    model = build(cfg)
    head = model.roi_head
    refine, cl_forward, passes = head.mask_head.refine_boxes, head._cl_forward, []

    def off_the_image(boxes, preds, labels, thr=0.5, max_shape=None):
        # every refined box half off the right border, then clipped where the head asks for it
        moved = refine(boxes, preds, labels, thr) + torch.tensor([IMAGE / 2, 0.0, IMAGE / 2, 0.0])
        return moved if max_shape is None else clip_boxes(moved, max_shape.to(moved.dtype))

    def spy(x, rois, img_shapes, labels=None):
        passes.append(rois.clone())
        return cl_forward(x, rois, img_shapes, labels)

    head.mask_head.refine_boxes, head._cl_forward = off_the_image, spy
    (result,) = predict(cfg, model)[:1]
    second = passes[1][:, 1:]
    assert len(second) and (second[:, 2] > IMAGE).any() != clip and (second <= IMAGE).all() == clip
    boxes = result.pred_instances.bboxes
    assert (boxes <= IMAGE).all() and (boxes >= 0).all()


def test_the_codes_iou_loss_is_its_broadcast_mean():
    """MeanProductIoULoss equals the authors' code as it runs: -log of the IoUs (those <= 0.1 raised by
    0.1) times (N, 1) weights against (N,) losses, the mean of the N x N products, times 2; a
    degenerate box costs -log(0.1 + eps), not -log(eps)."""
    from mmdet.registry import MODELS
    from mmdet.structures.bbox import bbox_overlaps

    torch.manual_seed(0)
    target = torch.tensor([[10.0, 10.0, 50.0, 60.0]]).repeat(6, 1)
    pred = target + torch.randn(6, 4) * 8
    pred[0] = torch.tensor([30.0, 30.0, 30.0, 30.0])  # degenerate: IoU 0
    weight = torch.rand(6) * (torch.rand(6) > 0.3)
    ious = bbox_overlaps(pred, target, is_aligned=True).clamp(min=1e-6)
    per_box = -torch.where(ious > 0.1, ious, ious + 0.1).log()
    expected = 2.0 * (per_box[None, :] * weight[:, None]).mean()  # the code's (N, 1) x (N,) broadcast
    loss = MODELS.build(dict(type="MeanProductIoULoss", floor=0.1, loss_weight=2.0))
    assert torch.allclose(loss(pred, target, weight=weight), expected)
    assert torch.allclose(loss(pred, target, weight=weight[:, None]), expected)
    assert float(per_box[0]) == pytest.approx(-torch.tensor(0.1 + 1e-6).log().item())
    plain = MODELS.build(dict(type="MeanProductIoULoss", floor=0.0, loss_weight=2.0))
    assert float(plain(pred[:1], target[:1])) == pytest.approx(-2 * torch.tensor(1e-6).log().item(), rel=1e-4)
    assert float(loss(pred[:0], target[:0], weight=weight[:0])) == 0.0


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
