"""CoMask's collaborative-learning (CL) head on 14x14 RoI features (Sec. 3.2): a 3x3 stride-2 conv and 3x3
convs down to 7x7; from there a conv giving per-pixel box distances (l, t, r, b) on the 7x7 grid of bin
centres, two deconvolutions and a conv giving 28x28 class masks, and a mask-scoring branch (the features
with the label's max-pooled mask, convs, two FCs, one IoU per class). The refined box is the per-pixel
boxes averaged with the label's mask's weights on the grid (Eqs. 8-9, `geometry`); with `fg_map` ("w/o
CL") the weights come from D2Det's 1-channel foreground map instead. Losses: IoU loss of every pixel's
box against the gt box, weighted by the pixels' weights (`loss_bbox`: the authors' code's mean(loss) x
mean(weight), `iou_loss.MeanProductIoULoss`, or mmdet's per pixel); mask CE; MSE of the mask IoU;
foreground BCE with `fg_map`.
Where each choice comes from: README.md beside this file.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmdet.models.roi_heads.mask_heads import FCNMaskHead, MaskIoUHead
from mmdet.registry import MODELS
from mmdet.utils import InstanceList
from mmengine.model import BaseModule
from torch import Tensor, nn

from .geometry import MASK_TO_GRID, clip_boxes, decode_dense_boxes, mask_to_grid, weighted_box

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


@MODELS.register_module()
class CoMaskCLHead(BaseModule):
    """The collaborative-learning head on 14x14 RoI features.

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
        loss_bbox, loss_mask, loss_mask_iou, loss_fg: IoU 2.0 (mmdet's IoULoss, per pixel; the zoo builds
            the code's `MeanProductIoULoss`), mask CE 1.0, MSE 0.5, foreground BCE 1.0.
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
        """Eqs. 8-9 for every RoI, clipped to `max_shape` (n, 2) as (h, w) when given (the authors' code
        does not clip); an empty box keeps its input box."""
        refined = weighted_box(decode_dense_boxes(boxes, preds["dist"]), self.box_weights(preds, labels), thr)
        if max_shape is not None:
            refined = clip_boxes(refined, max_shape.to(refined.dtype))
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

