"""CoMask's collaborative-learning RoI head (Chen et al., "Accurate Instance Segmentation via Collaborative
Learning", Sec. 3.2, Eqs. 8-9), as an MMDetection 3.3 RoI head for TwoStageDetector / MaskRCNN.

From the paper:
- the CL head: RoIAlign 14x14, one 3x3 stride-2 conv then 9 3x3 convs (7x7), a conv giving per-pixel box
  distances (l, t, r, b) on the 7x7 grid of bin centres, and 2 deconvolutions + a conv giving coarse class
  masks (28x28, one per class: 3.x labels, no background channel);
- the final box (Eqs. 8-9): the label's mask, sigmoid, average-pooled to 7x7 (M_s); the per-pixel boxes
  averaged with weights M_s over the pixels with M_s > 0.5;
- a second pass of the same head on the refined box gives the final mask.

From the authors' code (`clelouch/CoMask`: SID.py, SID_head.py, configs/SID), where the paper is silent:
- classification by Shared2FCBBoxHead(with_reg=False), loss_cls weight 2.0, on D2Det's discriminative RoI
  pooling (`roi_pool='drp'`; 'roialign' is plain RoIAlign 7x7 for comparison), with the ratio level
  mapping for both extractors (`RatioRoIExtractor`);
- GN(32), bias-free convs; distances relative to the RoI's width/height, then ReLU;
- positive RoIs jittered by up to +-15% (centre and size) before the CL head, at most 192 of them per batch;
- losses: IoU loss (weight 2.0) between every pixel's decoded box and the gt box, each pixel weighted by
  sigmoid(mask) x [> 0.5] (not detached, as in the code; the code's (N, 1) weights against its loss's (N,)
  broadcast in mmdet 1.x, so there the weighting reduces to mean(loss) x mean(weight): here it is per
  pixel, the reading the paper's Eqs. 8-9 suggest); mask CE (1.0) on the label's mask; mask scoring
  (0.5): the 7x7 features with the 4x4-max-pooled (detached) predicted mask, 2 x [conv3x3 + GN + ReLU],
  2 FC 1024, one IoU per class, MSE on targets in (0.1, 1] (mmdet's MaskIoUHead targets, which threshold
  the logits at mask_thr_binary, as the authors' code does);
- test: classification NMS IoU 0.3, score threshold 0.05; mask score = class score + 0.3 x predicted IoU
  (3.x keeps one score per detection, so the boxes are ranked by it too: box AP is not the code's; the
  paper reports mask AP only).

Differences from the code, by choice: at test the code averages over every pixel (no 0.5 threshold), we
follow the paper (test_cfg `box_weight_thr`, 0 gives the code's rule); when no pixel passes, every pixel
is used with its M_s weight (and uniform weights if those sum to 0), and a refined box that is empty after
clipping keeps the classification box. M_s is the paper's average pooling (`mask_to_grid='avg'`; the
code's bilinear resize of the logits is 'bilinear'). The code's IoU loss adds 0.1 to IoUs below 0.1; this
uses mmdet's plain -log(IoU).

`collaborative=False` ("w/o CL", Table 3, not defined in the paper): the box weights do not come from the
coarse masks but from D2Det's separate foreground map, the head the authors' code was derived from (their
D2Det.py with MASK_ON; SID.py still builds its unused loss): a 3x3 conv -> 1 channel on the 7x7 features,
trained with BCE (`loss_fg`, 1.0) against the RoI's gt mask target resized to 7x7 and thresholded at 0.5;
the IoU loss is weighted by that binary target, and at test the box is the plain mean over the pixels whose
foreground logit is > 0. Everything else (masks, mask scoring, second pass) is unchanged. Chosen over
uniform weights because it keeps the box branch's background suppression and only removes the
mask-to-box coupling, which is what the ablation is about.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.roi_heads.mask_heads import FCNMaskHead, MaskIoUHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.models.utils import empty_instances, unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from mmdet.structures.mask import mask_target
from mmdet.utils import InstanceList
from mmengine.model import BaseModule
from torch import Tensor, nn

from .deform_roi_pool import RatioRoIExtractor

ROI_POOLS = ("drp", "roialign")
MASK_TO_GRID = ("avg", "bilinear")

# Defaults shared by every instance: MODELS.build and BaseModule copy them, never mutate them.
_NORM = dict(type="GN", num_groups=32)
_LOSS_BBOX = dict(type="IoULoss", loss_weight=2.0)
_LOSS_MASK = dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0)
_LOSS_MASK_IOU = dict(type="MSELoss", loss_weight=0.5)
_LOSS_FG = dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)
# the authors' init_weights: Kaiming (fan_out, relu) convs, N(0, 0.001) box/foreground convs, Caffe2Xavier
# (= their kaiming a=1, fan_in, uniform) mask-scoring FCs, N(0, 0.01) IoU outputs
_INIT = [dict(type="Kaiming", layer=["Conv2d", "ConvTranspose2d"]),
         dict(type="Normal", std=0.001, override=dict(name="conv_reg")),
         dict(type="Caffe2Xavier", override=dict(name="iou_fcs")),
         dict(type="Normal", std=0.01, override=dict(name="fc_mask_iou"))]
_INIT_FG = [*_INIT, dict(type="Normal", std=0.001, override=dict(name="conv_fg"))]


# ---- geometry


def jitter_boxes(boxes: Tensor, img_shape: tuple[int, int] | None = None, amplitude: float = 0.15) -> Tensor:
    """The authors' training jitter: centre moved by up to `amplitude` x (w, h), size scaled by 1 +- amplitude
    (uniform, independently per coordinate), then clipped to the image (h, w)."""
    if boxes.numel() == 0 or amplitude <= 0:
        return boxes.clone()
    noise = boxes.new_empty(boxes.shape[0], 4).uniform_(-amplitude, amplitude)
    wh = (boxes[:, 2:] - boxes[:, :2]).abs()
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + wh * noise[:, :2]
    wh = wh * (1 + noise[:, 2:])
    out = torch.cat([centre - wh / 2, centre + wh / 2], 1)
    if img_shape is not None:
        out[:, 0::2] = out[:, 0::2].clamp(0, img_shape[1])
        out[:, 1::2] = out[:, 1::2].clamp(0, img_shape[0])
    return out


def decode_dense_boxes(boxes: Tensor, dist: Tensor) -> Tensor:
    """Per-pixel boxes (n, S*S, 4), row-major, from distances (n, 4, S, S) as (l, t, r, b) in units of the
    RoI's width/height, measured from the centres of the S x S bins of `boxes` (n, 4)."""
    n, _, size, _ = dist.shape
    w = (boxes[:, 2] - boxes[:, 0]).view(n, 1, 1)
    h = (boxes[:, 3] - boxes[:, 1]).view(n, 1, 1)
    steps = (torch.arange(size, device=dist.device, dtype=dist.dtype) + 0.5) / size
    cx = boxes[:, 0].view(n, 1, 1) + w * steps.view(1, 1, size)
    cy = boxes[:, 1].view(n, 1, 1) + h * steps.view(1, size, 1)
    left, top, right, bottom = dist.unbind(1)
    dense = torch.stack([cx - left * w, cy - top * h, cx + right * w, cy + bottom * h], -1)
    return dense.view(n, size * size, 4)


def mask_to_grid(mask_logits: Tensor, size: int, mode: str = "avg") -> Tensor:
    """M_s (n, size, size) from one mask's logits per RoI (n, M, M): the paper's average pooling of the
    sigmoid ('avg'), or the code's sigmoid of the bilinearly resized logits ('bilinear')."""
    if mode == "avg":
        return F.adaptive_avg_pool2d(mask_logits.sigmoid()[:, None], size)[:, 0]
    return F.interpolate(mask_logits[:, None], (size, size), mode="bilinear", align_corners=True)[:, 0].sigmoid()


def weighted_box(dense: Tensor, weights: Tensor, thr: float = 0.5) -> Tensor:
    """Eqs. 8-9: the mean of the per-pixel boxes (n, P, 4) weighted by `weights` (n, P) over the pixels
    whose weight is > thr. No pixel above thr: all pixels with their weights; weights summing to 0:
    uniform."""
    kept = weights * (weights > thr)
    w = torch.where((kept.sum(1) > 0)[:, None], kept, weights)
    w = torch.where((w.sum(1) > 0)[:, None], w, torch.ones_like(w))
    return (dense * w[..., None]).sum(1) / w.sum(1)[:, None]


def _clip(boxes: Tensor, max_shape: Tensor) -> Tensor:
    """Boxes (n, 4) clipped to per-box image sizes (n, 2) as (h, w)."""
    x = torch.minimum(boxes[:, 0::2].clamp(min=0), max_shape[:, 1:2])
    y = torch.minimum(boxes[:, 1::2].clamp(min=0), max_shape[:, 0:1])
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


# ---- the CL head


@MODELS.register_module()
class CoMaskCLHead(BaseModule):
    """The collaborative-learning head on 14x14 RoI features (see the module docstring).

    `forward(x, labels=None)` returns a dict: 'feats' (n, C, 7, 7), 'dist' (n, 4, 7, 7) box distances,
    'mask_preds' (n, num_classes, 28, 28) logits, 'mask_iou' (n, num_classes) or None without labels (it
    reads the labels' masks), 'fg' (n, 1, 7, 7) foreground logits or None (with `fg_map` only).

    Args:
        num_classes: classes (80 on COCO; no background channel).
        in_channels, conv_out_channels: RoI feature and conv widths (256).
        roi_feat_size: RoI feature size (14); the box grid is half of it (7), the masks twice it (28).
        num_convs: 3x3 convs, the first with stride 2 (10).
        num_iou_convs, fc_out_channels: the mask-scoring branch's convs (2) and FC width (1024, 2 FCs).
        norm_cfg: norm of every conv (GN(32)).
        fg_map: D2Det's 1-channel foreground map for the box weights ("w/o CL"); set by CoMaskRoIHead.
        weight_thr: M_s threshold of the training box weights (0.5).
        mask_to_grid: 'avg' (paper) or 'bilinear' (code), how the 28x28 mask becomes M_s.
        detach_box_weights: stop the IoU loss's gradient into the masks (the code lets it through).
        loss_bbox, loss_mask, loss_mask_iou, loss_fg: IoU 2.0, mask CE 1.0, MSE 0.5, foreground BCE 1.0.
    """

    # mmdet's mask pasting and mask-IoU targets, reused as they are
    class_agnostic = False
    predict_by_feat = FCNMaskHead.predict_by_feat
    _predict_by_feat_single = FCNMaskHead._predict_by_feat_single
    _iou_targets = MaskIoUHead.get_targets
    _get_area_ratio = MaskIoUHead._get_area_ratio

    def __init__(self, num_classes: int = 80, in_channels: int = 256, conv_out_channels: int = 256,
                 roi_feat_size: int = 14, num_convs: int = 10, num_iou_convs: int = 2, fc_out_channels: int = 1024,
                 norm_cfg: dict = _NORM, fg_map: bool = False, weight_thr: float = 0.5, mask_to_grid: str = "avg",
                 detach_box_weights: bool = False, loss_bbox: dict = _LOSS_BBOX, loss_mask: dict = _LOSS_MASK,
                 loss_mask_iou: dict = _LOSS_MASK_IOU, loss_fg: dict = _LOSS_FG,
                 init_cfg: dict | list[dict] | None = None) -> None:
        if mask_to_grid not in MASK_TO_GRID:
            raise ValueError(f"mask_to_grid must be one of {MASK_TO_GRID}, got {mask_to_grid!r}")
        if roi_feat_size % 2:
            raise ValueError(f"roi_feat_size must be even (a stride-2 conv halves it), got {roi_feat_size}")
        super().__init__(init_cfg=copy.deepcopy(_INIT_FG if fg_map else _INIT) if init_cfg is None else init_cfg)
        self.num_classes = num_classes
        self.roi_feat_size = roi_feat_size
        self.map_size = roi_feat_size // 2
        self.fg_map = fg_map
        self.weight_thr = weight_thr
        self.mask_to_grid = mask_to_grid
        self.detach_box_weights = detach_box_weights
        c = conv_out_channels
        self.convs = nn.Sequential(*[
            ConvModule(in_channels if i == 0 else c, c, 3, stride=2 if i == 0 else 1, padding=1, norm_cfg=norm_cfg)
            for i in range(num_convs)])
        self.conv_reg = nn.Conv2d(c, 4, 3, padding=1)
        self.conv_fg = nn.Conv2d(c, 1, 3, padding=1) if fg_map else None
        self.deconv1 = nn.ConvTranspose2d(c, c, 2, stride=2)
        self.norm1 = build_norm_layer(norm_cfg, c)[1]
        self.deconv2 = nn.ConvTranspose2d(c, c, 2, stride=2)
        self.norm2 = build_norm_layer(norm_cfg, c)[1]
        self.conv_logits = nn.Conv2d(c, num_classes, 3, padding=1)
        self.iou_convs = nn.Sequential(*[ConvModule(c + 1 if i == 0 else c, c, 3, padding=1, norm_cfg=norm_cfg)
                                         for i in range(num_iou_convs)])
        self.iou_fcs = nn.ModuleList([nn.Linear(c * self.map_size ** 2 if i == 0 else fc_out_channels,
                                                fc_out_channels) for i in range(2)])
        self.fc_mask_iou = nn.Linear(fc_out_channels, num_classes)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.loss_mask = MODELS.build(loss_mask)
        self.loss_mask_iou = MODELS.build(loss_mask_iou)
        self.loss_fg = MODELS.build(loss_fg) if fg_map else None

    def forward(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor | None]:
        if x.shape[-2:] != (self.roi_feat_size, self.roi_feat_size):
            raise ValueError(f"expected {self.roi_feat_size}x{self.roi_feat_size} RoI features, got {tuple(x.shape)}")
        feats = self.convs(x)
        dist = F.relu(self.conv_reg(feats))
        up = F.relu(self.norm1(self.deconv1(feats)))
        mask_preds = self.conv_logits(F.relu(self.norm2(self.deconv2(up))))
        mask_iou = None
        if labels is not None:
            own = mask_preds[torch.arange(len(labels), device=labels.device), labels].detach()
            pooled = F.adaptive_max_pool2d(own.sigmoid()[:, None], self.map_size)
            y = self.iou_convs(torch.cat([feats, pooled], 1)).flatten(1)
            for fc in self.iou_fcs:
                y = F.relu(fc(y))
            mask_iou = self.fc_mask_iou(y)
        fg = self.conv_fg(feats) if self.fg_map else None
        return dict(feats=feats, dist=dist, mask_preds=mask_preds, mask_iou=mask_iou, fg=fg)

    def box_weights(self, preds: dict, labels: Tensor) -> Tensor:
        """Test-time per-pixel box weights (n, S*S): M_s of the label's mask, or D2Det's binary
        foreground map (logit > 0)."""
        if self.fg_map:
            return (preds["fg"] > 0).to(preds["dist"].dtype).flatten(1)
        own = preds["mask_preds"][torch.arange(len(labels), device=labels.device), labels]
        return mask_to_grid(own, self.map_size, self.mask_to_grid).flatten(1)

    def refine_boxes(self, boxes: Tensor, preds: dict, labels: Tensor, thr: float = 0.5,
                     max_shape: Tensor | None = None) -> Tensor:
        """Eqs. 8-9 for every RoI, clipped to `max_shape` (n, 2) as (h, w); a box that is empty after that
        keeps its input box."""
        refined = weighted_box(decode_dense_boxes(boxes, preds["dist"]), self.box_weights(preds, labels), thr)
        if max_shape is not None:
            refined = _clip(refined, max_shape.to(refined.dtype))
        empty = (refined[:, 2] <= refined[:, 0]) | (refined[:, 3] <= refined[:, 1])
        return torch.where(empty[:, None], boxes, refined)

    def mask_iou_targets(self, boxes: list[Tensor], gt_inds: list[Tensor], batch_gt_instances: InstanceList,
                         mask_preds: Tensor, mask_targets: Tensor, rcnn_train_cfg) -> Tensor:
        """MaskIoUHead's targets for the (jittered, subsampled) RoIs `boxes` per image; mask_preds (n, M, M)
        are the labels' mask logits."""
        samples = [SimpleNamespace(pos_priors=b, pos_assigned_gt_inds=g) for b, g in zip(boxes, gt_inds)]
        cfg = SimpleNamespace(mask_thr_binary=rcnn_train_cfg.get("mask_thr_binary", 0.5))
        # 0/0 (no predicted pixel, no gt pixel) would be NaN, and NaN x weight 0 still NaN: call it 0
        return self._iou_targets(samples, batch_gt_instances, mask_preds, mask_targets, cfg).nan_to_num(0.0)

    def loss_and_target(self, preds: dict, boxes: Tensor, gt_boxes: Tensor, labels: Tensor, mask_targets: Tensor,
                        mask_iou_targets: Tensor) -> dict[str, Tensor]:
        """The CL head's losses for RoIs `boxes` (n, 4) assigned to `gt_boxes` of class `labels`."""
        outputs = [t for t in preds.values() if t is not None]
        if boxes.shape[0] == 0:  # every output stays in the graph (DDP) with a zero loss
            zero = sum(t.sum() for t in outputs) * 0.0
            names = ["loss_bbox", "loss_mask", "loss_mask_iou"] + (["loss_fg"] if self.fg_map else [])
            return {name: zero for name in names}
        n, size = boxes.shape[0], self.map_size
        rows = torch.arange(n, device=labels.device)
        losses = {}
        if self.fg_map:
            fg_target = (F.interpolate(mask_targets[:, None].float(), (size, size), mode="bilinear",
                                       align_corners=False) > 0.5).float().flatten(1)
            losses["loss_fg"] = self.loss_fg(preds["fg"].flatten(1), fg_target)
            weights = fg_target
        else:
            grid = mask_to_grid(preds["mask_preds"][rows, labels], size, self.mask_to_grid).flatten(1)
            weights = grid * (grid > self.weight_thr)
            if self.detach_box_weights:
                weights = weights.detach()
        dense = decode_dense_boxes(boxes, preds["dist"]).reshape(-1, 4)
        targets = gt_boxes.repeat_interleave(size * size, 0)  # every pixel regresses the whole gt box
        losses["loss_bbox"] = self.loss_bbox(dense, targets, weight=weights.reshape(-1))
        losses["loss_mask"] = self.loss_mask(preds["mask_preds"], mask_targets, labels)
        valid = ((mask_iou_targets > 0.1) & (mask_iou_targets <= 1.0)).float()
        losses["loss_mask_iou"] = self.loss_mask_iou(preds["mask_iou"][rows, labels], mask_iou_targets, weight=valid)
        return losses


# ---- the RoI head


def _img_shapes(batch_img_metas: list[dict], device: torch.device) -> Tensor:
    """(num_images, 2): each image's img_shape (h, w)."""
    return torch.tensor([list(m["img_shape"][:2]) for m in batch_img_metas], dtype=torch.float32, device=device)


@MODELS.register_module()
class CoMaskRoIHead(StandardRoIHead):
    """CoMask's second stage: classification (bbox_head, Shared2FCBBoxHead with with_reg=False) on
    `bbox_roi_extractor`, box refinement and masks by the CL head (`mask_head`, CoMaskCLHead) on
    `mask_roi_extractor` (RoIAlign 14x14). See the module docstring.

    Args:
        roi_pool: 'drp' (D2Det's DiscriminativeRoIPool 7x7, the authors' code) or 'roialign' (RoIAlign 7x7)
            for the classification branch. bbox_roi_extractor's roi_layer may be omitted (it is then filled
            in) or must be of that type.
        collaborative: False is "w/o CL" (D2Det's foreground map weighs the boxes; the module docstring).

    train_cfg (rcnn): assigner, sampler, mask_size (28), mask_thr_binary (0.5, mask-IoU targets),
        jitter (0.15), max_num_reg (192; <= 0: no limit).
    test_cfg (rcnn): score_thr (0.05), nms (iou_threshold 0.3), max_per_img (100), mask_thr_binary (0.5),
        box_weight_thr (0.5; 0 = the code's unthresholded average), mask_iou_weight (0.3).
    """

    def __init__(self, bbox_roi_extractor: dict, bbox_head: dict, mask_roi_extractor: dict, mask_head: dict,
                 roi_pool: str = "drp", collaborative: bool = True, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, shared_head: dict | None = None,
                 init_cfg: dict | list[dict] | None = None) -> None:
        if roi_pool not in ROI_POOLS:
            raise ValueError(f"roi_pool must be one of {ROI_POOLS}, got {roi_pool!r}")
        if shared_head is not None:
            raise ValueError("CoMaskRoIHead has no shared head")
        if mask_roi_extractor is None or mask_head is None:
            raise ValueError("CoMaskRoIHead needs mask_roi_extractor (RoIAlign 14x14) and mask_head (CoMaskCLHead)")
        if bbox_head.get("with_reg", True):
            raise ValueError("the CL head regresses the boxes: bbox_head must have with_reg=False")
        mask_head = dict(mask_head)
        if mask_head.setdefault("fg_map", not collaborative) == collaborative:
            raise ValueError(f"collaborative={collaborative} contradicts mask_head fg_map={mask_head['fg_map']}")
        super().__init__(bbox_roi_extractor=self._classification_extractor(bbox_roi_extractor, roi_pool),
                         bbox_head=bbox_head, mask_roi_extractor=mask_roi_extractor, mask_head=mask_head,
                         train_cfg=train_cfg, test_cfg=test_cfg, init_cfg=init_cfg)
        self.roi_pool = roi_pool
        self.collaborative = collaborative

    @staticmethod
    def _classification_extractor(cfg: dict, roi_pool: str) -> dict:
        cfg = copy.deepcopy(dict(cfg))
        default = (dict(type="DiscriminativeRoIPool", output_size=7, output_channels=cfg["out_channels"])
                   if roi_pool == "drp" else dict(type="RoIAlign", output_size=7, sampling_ratio=0))
        layer = cfg.get("roi_layer")
        if layer is None:
            cfg["roi_layer"] = default
        elif layer["type"] != default["type"]:
            raise ValueError(f"roi_pool={roi_pool!r} pools with {default['type']}, but bbox_roi_extractor's "
                             f"roi_layer is {layer['type']}")
        return cfg

    @staticmethod
    def _extract(extractor: nn.Module, x: tuple[Tensor, ...], rois: Tensor, img_shapes: Tensor | None) -> Tensor:
        feats = x[:extractor.num_inputs]
        if isinstance(extractor, RatioRoIExtractor):
            return extractor(feats, rois, img_shapes=img_shapes)
        return extractor(feats, rois)

    def _bbox_forward(self, x: tuple[Tensor, ...], rois: Tensor, img_shapes: Tensor | None = None) -> dict:
        bbox_feats = self._extract(self.bbox_roi_extractor, x, rois, img_shapes)
        cls_score, bbox_pred = self.bbox_head(bbox_feats)
        return dict(cls_score=cls_score, bbox_pred=bbox_pred, bbox_feats=bbox_feats)

    def _cl_forward(self, x: tuple[Tensor, ...], rois: Tensor, img_shapes: Tensor | None,
                    labels: Tensor | None = None) -> dict:
        return self.mask_head(self._extract(self.mask_roi_extractor, x, rois, img_shapes), labels)

    # ---- training

    def _sample(self, x: tuple[Tensor, ...], rpn_results_list: InstanceList, batch_gt_instances: InstanceList,
                batch_gt_instances_ignore: InstanceList) -> list[SamplingResult]:
        sampling_results = []
        for i, rpn_results in enumerate(rpn_results_list):
            rpn_results.priors = rpn_results.pop("bboxes")
            assign_result = self.bbox_assigner.assign(rpn_results, batch_gt_instances[i],
                                                      batch_gt_instances_ignore[i])
            sampling_results.append(self.bbox_sampler.sample(assign_result, rpn_results, batch_gt_instances[i],
                                                             feats=[lvl[i][None] for lvl in x]))
        return sampling_results

    def loss(self, x: tuple[Tensor, ...], rpn_results_list: InstanceList, batch_data_samples: SampleList) -> dict:
        batch_gt_instances, batch_gt_instances_ignore, batch_img_metas = unpack_gt_instances(batch_data_samples)
        img_shapes = _img_shapes(batch_img_metas, x[0].device)
        sampling_results = self._sample(x, rpn_results_list, batch_gt_instances, batch_gt_instances_ignore)
        rois = bbox2roi([res.priors for res in sampling_results])
        cls_score = self._bbox_forward(x, rois, img_shapes)["cls_score"]
        losses = dict(self.bbox_head.loss_and_target(cls_score=cls_score, bbox_pred=None, rois=rois,
                                                     sampling_results=sampling_results,
                                                     rcnn_train_cfg=self.train_cfg)["loss_bbox"])
        losses.update(self.cl_loss(x, sampling_results, batch_gt_instances, batch_img_metas, img_shapes))
        return losses

    def cl_loss(self, x: tuple[Tensor, ...], sampling_results: list[SamplingResult],
                batch_gt_instances: InstanceList, batch_img_metas: list[dict], img_shapes: Tensor) -> dict:
        """The CL head's losses on the jittered positives, at most `max_num_reg` of them per batch."""
        amplitude = self.train_cfg.get("jitter", 0.15)
        max_num = self.train_cfg.get("max_num_reg", 192)
        boxes = torch.cat([jitter_boxes(res.pos_priors, meta["img_shape"][:2], amplitude)
                           for res, meta in zip(sampling_results, batch_img_metas)])
        gt_boxes = torch.cat([res.pos_gt_bboxes for res in sampling_results])
        labels = torch.cat([res.pos_gt_labels for res in sampling_results])
        gt_inds = torch.cat([res.pos_assigned_gt_inds for res in sampling_results])
        img_ids = torch.cat([torch.full((len(res.pos_priors),), i, dtype=torch.long, device=boxes.device)
                             for i, res in enumerate(sampling_results)])
        if 0 < max_num < len(boxes):  # a random subset, kept in image order
            keep = torch.randperm(len(boxes), device=boxes.device)[:max_num].sort().values
            boxes, gt_boxes, labels, gt_inds, img_ids = (t[keep] for t in (boxes, gt_boxes, labels, gt_inds, img_ids))
        counts = torch.bincount(img_ids, minlength=len(sampling_results)).tolist()
        boxes_list, gt_inds_list = boxes.split(counts), gt_inds.split(counts)
        preds = self._cl_forward(x, bbox2roi(list(boxes_list)), img_shapes, labels)
        gt_masks = [gt.masks for gt in batch_gt_instances]
        mask_targets = mask_target(list(boxes_list), list(gt_inds_list), gt_masks, self.train_cfg)
        own = preds["mask_preds"][torch.arange(len(labels), device=labels.device), labels].detach()
        iou_targets = self.mask_head.mask_iou_targets(list(boxes_list), list(gt_inds_list), batch_gt_instances,
                                                      own, mask_targets, self.train_cfg)
        return self.mask_head.loss_and_target(preds, boxes, gt_boxes, labels, mask_targets, iou_targets)

    # ---- testing

    def predict(self, x: tuple[Tensor, ...], rpn_results_list: InstanceList, batch_data_samples: SampleList,
                rescale: bool = False) -> InstanceList:
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        results_list = self.predict_bbox(x, batch_img_metas, rpn_results_list, self.test_cfg, rescale=False)
        return self.predict_mask(x, batch_img_metas, results_list, rescale=rescale)

    def predict_bbox(self, x: tuple[Tensor, ...], batch_img_metas: list[dict], rpn_results_list: InstanceList,
                     rcnn_test_cfg: dict, rescale: bool = False) -> InstanceList:
        """Class scores of the proposals, then NMS; the boxes are the proposals (no regression here)."""
        proposals = [res.bboxes for res in rpn_results_list]
        rois = bbox2roi(proposals)
        if rois.shape[0] == 0:
            return empty_instances(batch_img_metas, rois.device, task_type="bbox",
                                   box_type=self.bbox_head.predict_box_type, num_classes=self.bbox_head.num_classes,
                                   score_per_cls=rcnn_test_cfg is None)
        cls_scores = self._bbox_forward(x, rois, _img_shapes(batch_img_metas, rois.device))["cls_score"]
        counts = tuple(len(p) for p in proposals)
        return self.bbox_head.predict_by_feat(rois=rois.split(counts), cls_scores=cls_scores.split(counts),
                                              bbox_preds=(None,) * len(proposals), batch_img_metas=batch_img_metas,
                                              rcnn_test_cfg=rcnn_test_cfg, rescale=rescale)

    def predict_mask(self, x: tuple[Tensor, ...], batch_img_metas: list[dict], results_list: InstanceList,
                     rescale: bool = False) -> InstanceList:
        """Refine the detections' boxes (Eqs. 8-9), run the CL head again on them for the masks and their
        IoUs, score each instance cls + mask_iou_weight x IoU, paste the masks."""
        cfg = self.test_cfg
        rois = bbox2roi([res.bboxes for res in results_list])
        if rois.shape[0] == 0:
            return empty_instances(batch_img_metas, rois.device, task_type="mask", instance_results=results_list,
                                   mask_thr_binary=cfg.mask_thr_binary)
        img_shapes = _img_shapes(batch_img_metas, rois.device)
        labels = torch.cat([res.labels for res in results_list])
        first = self._cl_forward(x, rois, img_shapes)
        refined = self.mask_head.refine_boxes(rois[:, 1:], first, labels, thr=cfg.get("box_weight_thr", 0.5),
                                              max_shape=img_shapes[rois[:, 0].long()])
        second = self._cl_forward(x, torch.cat([rois[:, :1], refined], 1), img_shapes, labels)
        mask_iou = second["mask_iou"][torch.arange(len(labels), device=labels.device), labels]
        counts = [len(res) for res in results_list]
        for res, boxes, iou in zip(results_list, refined.split(counts), mask_iou.split(counts)):
            res.bboxes = boxes
            res.scores = res.scores + cfg.get("mask_iou_weight", 0.3) * iou
        return self.mask_head.predict_by_feat(mask_preds=second["mask_preds"].split(counts),
                                              results_list=results_list, batch_img_metas=batch_img_metas,
                                              rcnn_test_cfg=cfg, rescale=rescale)

    def forward(self, x: tuple[Tensor, ...], rpn_results_list: InstanceList,
                batch_data_samples: SampleList | None = None) -> tuple:
        """Tensor mode (FLOP counting, export): class scores of the proposals, the CL head's box distances
        and masks for the first 100 of them."""
        rois = bbox2roi([res.bboxes for res in rpn_results_list])
        img_shapes = (_img_shapes([s.metainfo for s in batch_data_samples], rois.device)
                      if batch_data_samples else None)
        cls_score = self._bbox_forward(x, rois, img_shapes)["cls_score"]
        preds = self._cl_forward(x, rois[:100], img_shapes)
        return cls_score, preds["dist"], preds["mask_preds"]
