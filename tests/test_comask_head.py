"""CoMask's RoI head and D2Det's pooling (sbrrepro/models/comask_head.py, deform_roi_pool.py): the CPU
deformable RoI pooling against mmcv's definition (RoIAlign with zero offsets, a slow loop written from the
kernel otherwise, mmcv's own kernel where CUDA is present), the box rule of Eqs. 8-9 on hand-made masks,
the training jitter, and small detectors (ResNet-18, 64-channel FPN, 3 classes) that train one step with
a gradient on every parameter (DDP without find_unused_parameters) and predict masks."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

mmdet = pytest.importorskip("mmdet")

from mmcv.ops import DeformRoIPoolPack, RoIAlign  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.testing import demo_mm_inputs  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config, ConfigDict  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from steps import backward  # noqa: E402

from sbrrepro.models.comask_head import (  # noqa: E402
    CoMaskCLHead,
    decode_dense_boxes,
    jitter_boxes,
    mask_to_grid,
    weighted_box,
)
from sbrrepro.models.deform_roi_pool import (  # noqa: E402
    DeformRoIPoolCPU,
    DeformRoIPoolPackCPU,
    DiscriminativeRoIPool,
    RatioRoIExtractor,
    deform_roi_pool,
    deform_roi_pool_torch,
    ratio_levels,
)

CONFIGS = Path(mmdet.__file__).parent / ".mim" / "configs"
WIDTH, FC, CLASSES, IMAGE = 64, 128, 3, 128  # GN(32) needs a multiple of 32

register_all_modules()

# RoIs of a 10x12 map at scale 1/4: inside, across the border, past the border, tiny, inverted
ROIS = torch.tensor([[0, 1.0, 2.0, 30.0, 25.0], [1, -5.0, -3.0, 20.0, 44.0], [0, 40.0, 30.0, 47.0, 39.0],
                     [1, 3.0, 3.0, 3.5, 4.0], [0, -9.0, -9.0, 60.0, 70.0], [1, 30.0, 20.0, 10.0, 12.0]])


def _feature_map(dtype=torch.float32) -> torch.Tensor:
    return torch.randn(2, 3, 10, 12, generator=torch.Generator().manual_seed(0), dtype=dtype)


# ---- the deformable RoI pooling


def _point(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """mmcv's bilinear_interpolate, scalar by scalar."""
    height, width = img.shape[1:]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(img.shape[0], dtype=img.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    return ((1 - ly) * (1 - lx) * img[:, y_low, x_low] + (1 - ly) * lx * img[:, y_low, x_high]
            + ly * (1 - lx) * img[:, y_high, x_low] + ly * lx * img[:, y_high, x_high])


def _reference(input, rois, offset, size, scale, sampling_ratio, gamma) -> torch.Tensor:
    """deform_roi_pool_forward_cuda_kernel, one output bin at a time."""
    ph, pw = size
    out = torch.zeros(len(rois), input.shape[1], ph, pw, dtype=input.dtype)
    for k, roi in enumerate(rois.tolist()):
        img = input[int(roi[0])]
        x1, y1, x2, y2 = (v * scale - 0.5 for v in roi[1:])
        roi_w, roi_h = x2 - x1, y2 - y1
        bin_w, bin_h = roi_w / pw, roi_h / ph
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / ph)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pw)
        for i in range(ph):
            for j in range(pw):
                start_w, start_h = x1, y1
                if offset is not None:
                    start_w += gamma * roi_w * float(offset[k, 0, i, j])
                    start_h += gamma * roi_h * float(offset[k, 1, i, j])
                total = torch.zeros(input.shape[1], dtype=input.dtype)
                for iy in range(grid_h):
                    y = start_h + i * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        total += _point(img, y, start_w + j * bin_w + (ix + 0.5) * bin_w / grid_w)
                out[k, :, i, j] = total / max(grid_h * grid_w, 1)
    return out


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
def test_zero_offsets_are_aligned_roi_align(sampling_ratio):
    """mmcv's deform_roi_pool shifts RoIs by -0.5 and does not clamp their size: with zero (or no)
    offsets it is RoIAlign(aligned=True), not the aligned=False convention."""
    x, rois = _feature_map(), ROIS[:5]  # RoIAlign rejects the inverted RoI
    expected = RoIAlign((3, 4), spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=True)(x, rois)
    ours = deform_roi_pool_torch(x, rois, None, (3, 4), 0.25, sampling_ratio, 0.1)
    torch.testing.assert_close(ours, expected)
    zeros = torch.zeros(len(rois), 2, 3, 4)
    torch.testing.assert_close(deform_roi_pool_torch(x, rois, zeros, (3, 4), 0.25, sampling_ratio, 0.1), expected)
    legacy = RoIAlign((3, 4), spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=False)(x, rois)
    assert not torch.allclose(ours, legacy, atol=1e-3)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_offsets_match_the_kernel_definition(sampling_ratio):
    x = _feature_map(torch.float64)
    offset = torch.randn(len(ROIS), 2, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    expected = _reference(x, ROIS, offset, (3, 4), 0.25, sampling_ratio, 0.1)
    ours = deform_roi_pool_torch(x, ROIS.double(), offset, (3, 4), 0.25, sampling_ratio, 0.1)
    torch.testing.assert_close(ours, expected)
    assert expected.abs().sum() > 0 and not torch.allclose(ours, deform_roi_pool_torch(x, ROIS.double(), None, (3, 4),
                                                                                       0.25, sampling_ratio, 0.1))


def test_gradients_are_exact():
    """Autograd's gradient in input and offsets (away from the bilinear kinks) is the true one."""
    x = _feature_map(torch.float64)[:, :2, :6, :7].requires_grad_()
    rois = torch.tensor([[0, 2.0, 3.0, 17.0, 21.0], [1, 5.0, 1.0, 26.0, 13.0]], dtype=torch.float64)
    offset = (torch.randn(2, 2, 2, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
              * 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda i, o: deform_roi_pool_torch(i, rois, o, (2, 3), 0.25, 2, 0.1), (x, offset))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mmcv's deform_roi_pool kernel needs CUDA")
def test_cuda_matches_mmcv_kernel():
    """Forward and input gradient equal mmcv's kernel (its offset gradient differs in the border bands)."""
    x = _feature_map().cuda().requires_grad_()
    rois, offset = ROIS.cuda(), torch.randn(len(ROIS), 2, 3, 4, device="cuda")
    ours = deform_roi_pool(x, rois, offset, (3, 4), 0.25, 2, 0.1, impl="torch")
    theirs = deform_roi_pool(x, rois, offset, (3, 4), 0.25, 2, 0.1, impl="mmcv")
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn_like(ours)
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    (g_theirs,) = torch.autograd.grad(theirs, x, grad)
    torch.testing.assert_close(g_ours, g_theirs)


def test_pack_modules_run_on_cpu():
    """DeformRoIPoolCPU / DeformRoIPoolPackCPU are mmcv's modules (same parameters) with a CPU path."""
    x = _feature_map()
    pack = DeformRoIPoolPackCPU((3, 4), output_channels=3, deform_fc_channels=16, spatial_scale=0.25)
    assert pack.state_dict().keys() == DeformRoIPoolPack((3, 4), 3, 16, 0.25).state_dict().keys()
    plain = DeformRoIPoolCPU((3, 4), spatial_scale=0.25)
    torch.testing.assert_close(pack(x, ROIS), plain(x, ROIS))  # mmcv zero-initialises the last offset FC
    torch.nn.init.normal_(pack.offset_fc[-1].weight)
    moved = pack(x, ROIS)
    assert moved.shape == (len(ROIS), 3, 3, 4) and not torch.allclose(moved, plain(x, ROIS))


@pytest.mark.parametrize("weighting", ["awp", "sa"])
def test_discriminative_pool(weighting):
    """At init (zero offsets, zero weight conv): the 14x14 deformable pooling (= RoIAlign) then a plain 3/2/1
    average pooling, over the valid window for 'awp' (its weights cancel), times 0.5 for 'sa'."""
    x = torch.randn(2, 32, 10, 12, generator=torch.Generator().manual_seed(3))
    drp = DiscriminativeRoIPool(7, output_channels=32, spatial_scale=0.25, deform_fc_channels=16,
                                weighting=weighting)
    out = drp(x, ROIS[:5])
    assert out.shape == (5, 32, 7, 7)
    fine = RoIAlign(14, spatial_scale=0.25, sampling_ratio=1, aligned=True)(x, ROIS[:5])
    expected = (F.avg_pool2d(fine, 3, 2, 1, count_include_pad=False) if weighting == "awp"
                else 0.5 * F.avg_pool2d(fine, 3, 2, 1))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert drp(x, ROIS[:0]).shape == (0, 32, 7, 7)
    with pytest.raises(ValueError, match="weighting"):
        DiscriminativeRoIPool(7, output_channels=32, weighting="max")


def test_ratio_level_mapping():
    """ceil(3 - log2(image area / box area)) clamped to 0..3, on each RoI's own image."""
    rois = torch.tensor([[0, 0, 0, 100, 100], [0, 0, 0, 100, 50], [0, 0, 0, 50, 25], [0, 0, 0, 52, 25],
                         [0, 0, 0, 4, 4], [1, 0, 0, 100, 100]], dtype=torch.float32)
    areas = torch.tensor([1e4, 1e4, 1e4, 1e4, 1e4, 4e4])
    assert ratio_levels(rois, areas, 4).tolist() == [3, 2, 0, 1, 0, 1]
    extractor = RatioRoIExtractor(dict(type="RoIAlign", output_size=7, sampling_ratio=0), 4, [4, 8, 16, 32])
    feats = [torch.zeros(2, 4, 25 // 2 ** i, 25 // 2 ** i) for i in range(4)]
    assert extractor._levels(feats, rois, torch.tensor([[100, 100], [200, 200]])).tolist() == [3, 2, 0, 1, 0, 1]
    # without image sizes: the padded batch (finest map x its stride, 100x100 here) for every image
    assert extractor._levels(feats, rois, None).tolist() == [3, 2, 0, 1, 0, 3]


# ---- Eqs. 8-9 and the jitter


def _dense_case():
    boxes = torch.tensor([[10.0, 20.0, 80.0, 60.0], [0.0, 0.0, 28.0, 28.0]])
    dist = torch.rand(2, 4, 7, 7, generator=torch.Generator().manual_seed(4))
    return boxes, dist, decode_dense_boxes(boxes, dist).view(2, 7, 7, 4)


def test_dense_boxes_are_distances_from_bin_centres():
    boxes, dist, dense = _dense_case()
    i, j = 2, 5  # row (y), column (x)
    w, h = 70.0, 40.0
    cx, cy = 10 + w * (j + 0.5) / 7, 20 + h * (i + 0.5) / 7
    left, top, right, bottom = dist[0, :, i, j].tolist()
    torch.testing.assert_close(dense[0, i, j], torch.tensor([cx - left * w, cy - top * h, cx + right * w,
                                                             cy + bottom * h]))


def test_mask_weighted_box_on_the_left_half():
    """A mask that is 1 on the left 12 of 28 columns: M_s is 1 on the grid's first 3 columns, the box is
    the mean of those pixels' boxes; through CoMaskCLHead.refine_boxes too."""
    boxes, dist, dense = _dense_case()
    logits = torch.full((2, 28, 28), -20.0)
    logits[:, :, :12] = 20.0
    grid = mask_to_grid(logits, 7)
    torch.testing.assert_close(grid[:, :, :3], torch.ones(2, 7, 3))
    assert grid[:, :, 3:].max() < 1e-6
    expected = dense[:, :, :3].reshape(2, -1, 4).mean(1)
    torch.testing.assert_close(weighted_box(dense.view(2, -1, 4), grid.flatten(1)), expected)
    head = CoMaskCLHead(num_classes=2, in_channels=32, conv_out_channels=32, fc_out_channels=16)
    preds = dict(dist=dist, mask_preds=torch.stack([torch.zeros(2, 28, 28), logits], 1), fg=None)
    torch.testing.assert_close(head.refine_boxes(boxes, preds, torch.tensor([1, 1])), expected)
    # "w/o CL": D2Det's foreground map, a plain mean over the pixels whose logit is > 0
    d2det = CoMaskCLHead(num_classes=2, in_channels=32, conv_out_channels=32, fc_out_channels=16, fg_map=True)
    fg = torch.full((2, 1, 7, 7), -1.0)
    fg[..., :3] = 1.0
    preds = dict(dist=dist, mask_preds=torch.zeros(2, 2, 28, 28), fg=fg)
    torch.testing.assert_close(d2det.refine_boxes(boxes, preds, torch.tensor([1, 1])), expected)
    # the code's M_s: sigmoid of the bilinearly resized logits
    torch.testing.assert_close(mask_to_grid(torch.full((2, 28, 28), 0.7), 7, "bilinear"),
                               torch.full((2, 7, 7), 0.7).sigmoid())
    # a half-covered column (M_s = 0.5, not > 0.5) stays out
    logits[:, :, 12:14] = 20.0
    torch.testing.assert_close(weighted_box(dense.view(2, -1, 4), mask_to_grid(logits, 7).flatten(1)), expected)


def test_weighted_box_general_and_fallback():
    _, _, dense = _dense_case()
    dense = dense.view(2, -1, 4)
    weights = torch.rand(2, 49, generator=torch.Generator().manual_seed(5))
    kept = weights * (weights > 0.5)
    torch.testing.assert_close(weighted_box(dense, weights), (dense * kept[..., None]).sum(1) / kept.sum(1)[:, None])
    low = weights * 0.4  # nothing above 0.5: every pixel with its weight
    torch.testing.assert_close(weighted_box(dense, low), (dense * low[..., None]).sum(1) / low.sum(1)[:, None])
    torch.testing.assert_close(weighted_box(dense, torch.zeros(2, 49)), dense.mean(1))  # no weight at all


def test_jitter_stays_within_bounds():
    torch.manual_seed(0)
    xy = torch.rand(4000, 2) * 500 + 250
    wh = torch.rand(4000, 2) * 200 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    out = jitter_boxes(boxes, (2000, 2000), 0.15)
    centre, new_centre = (boxes[:, :2] + boxes[:, 2:]) / 2, (out[:, :2] + out[:, 2:]) / 2
    new_wh = out[:, 2:] - out[:, :2]
    eps = 1e-4
    assert ((new_centre - centre).abs() <= 0.15 * wh + eps).all()
    assert ((new_wh / wh) >= 0.85 - eps).all() and ((new_wh / wh) <= 1.15 + eps).all()
    assert (new_wh / wh).min() < 0.87 and (new_wh / wh).max() > 1.13  # the whole range is used
    border = torch.tensor([[0.0, 0.0, 50.0, 40.0], [90.0, 70.0, 128.0, 100.0]]).repeat(500, 1)
    clipped = jitter_boxes(border, (100, 128), 0.15)
    assert (clipped >= 0).all() and (clipped[:, 0::2] <= 128).all() and (clipped[:, 1::2] <= 100).all()
    torch.testing.assert_close(jitter_boxes(boxes, (2000, 2000), 0.0), boxes)


# ---- the detector


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
    model = Config.fromfile(str(CONFIGS / "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py")).to_dict()["model"]
    model["backbone"].update(depth=18, init_cfg=None)
    model["neck"].update(in_channels=[64, 128, 256, 512], out_channels=WIDTH)
    model["rpn_head"].update(in_channels=WIDTH, feat_channels=WIDTH)
    model["roi_head"] = roi_head(**kwargs)
    train, test = model["train_cfg"], model["test_cfg"]
    train["rpn_proposal"].update(nms_pre=200, max_per_img=100)
    test["rpn"].update(nms_pre=200, max_per_img=100)
    train["rcnn"]["sampler"]["num"] = 64
    train["rcnn"].update(jitter=0.15, max_num_reg=192, mask_thr_binary=0.5)
    # max_per_img 30, not 100: the CL head runs twice on every detection, slow on a shared CPU
    test["rcnn"].update(nms=dict(type="nms", iou_threshold=0.3), max_per_img=30, box_weight_thr=0.5,
                        mask_iou_weight=0.3)
    return model


def build(cfg: dict):
    """The model after its init_weights (the heads' own inits), without the per-parameter init log."""
    torch.manual_seed(0)
    model = MODELS.build(ConfigDict(copy.deepcopy(cfg)))
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model


def data(model, training: bool, num_items=None) -> dict:
    raw = demo_mm_inputs(batch_size=2, image_shapes=(3, IMAGE, IMAGE), num_items=num_items, num_classes=CLASSES,
                         with_mask=True)
    return model.data_preprocessor(raw, training=training)


# zero at the first step by construction, as in the authors' code: the offset FCs before the zero-initialised
# last one, and AWPool's InstanceNorm (its constant output's weights cancel in the normalised average)
ZERO_AT_INIT = (".offset_fc.0", ".offset_fc.2", ".pool.norm")


def train_step(model, num_items=None) -> dict:
    return backward(model, data(model, True, num_items))[0]


def dead_roi_layers(model) -> list[str]:
    """RoI-head layers whose gradient is all zero (a wiring mistake), apart from ZERO_AT_INIT and the RoI
    layers of pyramid levels no RoI was mapped to (kept in the graph with zero gradients)."""
    grads = {n: p.grad for n, p in model.named_parameters() if n.startswith("roi_head.") and p.requires_grad}
    levels = {n.split(".roi_layers.")[0] + ".roi_layers." + n.split(".roi_layers.")[1].split(".")[0]
              for n in grads if ".roi_layers." in n}
    unused = {lvl for lvl in levels if not any(g.any() for n, g in grads.items() if n.startswith(lvl + "."))}
    assert not levels or levels - unused, "no RoI reached any level"
    return sorted({n.rsplit(".", 1)[0] for n, g in grads.items() if not g.any()
                   and not any(part in n for part in ZERO_AT_INIT) and not any(n.startswith(u + ".") for u in unused)})


@pytest.mark.parametrize(("collaborative", "roi_pool"), [(True, "drp"), (False, "drp"), (True, "roialign"),
                                                          (False, "roialign")],
                         ids=["comask", "wo-cl", "comask-roialign", "wo-cl-roialign"])
def test_detector(collaborative, roi_pool):
    model = build(model_cfg(roi_pool=roi_pool, collaborative=collaborative))
    head = model.roi_head
    assert (head.mask_head.fg_map, head.mask_head.conv_fg is None) == (not collaborative, collaborative)
    layer = type(head.bbox_roi_extractor.roi_layers[0]).__name__
    assert layer == {"drp": "DiscriminativeRoIPool", "roialign": "RoIAlign"}[roi_pool]
    losses = train_step(model)
    assert {"loss_cls", "acc", "loss_bbox", "loss_mask", "loss_mask_iou"} <= set(losses)
    assert ("loss_fg" in losses) == (not collaborative)
    assert not dead_roi_layers(model), dead_roi_layers(model)
    model.eval()
    with torch.no_grad():
        results = model(**data(model, False), mode="predict")
        ((cls_score, dist, masks),) = model(**data(model, False), mode="tensor")
    assert len(results) == 2
    for r in results:
        inst = r.pred_instances
        assert 0 < len(inst.bboxes) == len(inst.masks) == len(inst.scores) <= 30
        assert tuple(inst.masks.shape[1:]) == (IMAGE, IMAGE) and inst.masks.dtype == torch.bool
        assert (inst.bboxes[:, 2:] > inst.bboxes[:, :2]).all() and (inst.bboxes >= 0).all()
        assert (inst.bboxes <= IMAGE).all()
    assert cls_score.shape[1] == CLASSES + 1 and dist.shape[1:] == (4, 7, 7) and masks.shape[1:] == (CLASSES, 28, 28)


def test_no_positives_still_reach_every_parameter():
    """Images without objects: zero CL losses, every parameter still in the graph (DDP)."""
    model = build(model_cfg())
    losses = train_step(model, num_items=[0, 0])
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
    train_step(model)
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
