"""SBR-CNN's Fully Connected Channels (FCC): the two large FCs of the detection head and of the Mask IoU
head become two conv blocks (L2C) on the 7x7 RoI map, halving the channels each time (in -> in/2 ->
in/4), optionally with a kxk non-local block before the first / after the last block (Fig. 4).

Init: the L2C layers sit in an mmengine Sequential, so after the head's own init_cfg
(which only targets the predictors) each layer re-runs its own init: ConvModule's Kaiming, as in
the authors' code, and NonLocal2dK's zero output projection (the block starts as the identity).
"""

from __future__ import annotations

import torch
from mmcv.cnn import ConvModule, Linear
from mmdet.models.roi_heads.bbox_heads import BBoxHead
from mmdet.models.roi_heads.mask_heads import MaskIoUHead
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.model import Sequential
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ...vocabulary import L2C
from .non_local import NonLocal2dK


def l2c_layers(in_channels: int, convs: str = "7x7", post_reduce: bool = True, nl_before: bool = False,
               nl_after: bool = False, nl_kernel: int = 7) -> tuple[Sequential, int]:
    """The L2C layers (each followed by a ReLU, as in the authors' heads) and their output channels.

    convs='7x7': per block one 7x7 conv (padding 3). convs='7x3-3x7': a 7x3 conv (padding 1, the map
    becomes (h-4)xw) then a 3x7 conv (padding 3, back to hxw); with post_reduce the first conv keeps
    the channels and the second halves them (Table 1's conv1a/conv1b), otherwise the first halves them.
    The paddings are those of the authors' configs; the paper's text swaps them (7x3 pad 3, 3x7 pad 1,
    via a hx(w+4) map), which changes no parameter count.
    """
    if convs not in L2C:
        raise ValueError(f"convs must be one of {L2C}, got {convs!r}")
    layers: list[nn.Module] = []
    if nl_before:
        layers += [NonLocal2dK(in_channels, kernel_size=nl_kernel), nn.ReLU()]
    channels = in_channels
    for _ in range(2):
        out = channels // 2
        if convs == "7x7":
            layers.append(ConvModule(channels, out, 7, padding=3))
        else:
            mid = channels if post_reduce else out
            layers += [ConvModule(channels, mid, (7, 3), padding=1), ConvModule(mid, out, (3, 7), padding=3)]
        channels = out
    if nl_after:
        layers += [NonLocal2dK(channels, kernel_size=nl_kernel), nn.ReLU()]
    return Sequential(*layers), channels


@MODELS.register_module()
class FCCBBoxHead(BBoxHead):
    """Detection head: L2C on the RoI map, flatten, then BBoxHead's fc_cls and fc_reg.

    A drop-in for Shared2FCBBoxHead (same forward, targets, losses and decoding). `fc_out_channels`
    is accepted and ignored, so a Shared2FCBBoxHead config only needs its type changed.
    """

    def __init__(self, convs: str = "7x7", post_reduce: bool = True, nl_before: bool = False,
                 nl_after: bool = False, nl_kernel: int = 7, fc_out_channels: int | None = None,
                 **kwargs) -> None:
        if kwargs.get("with_avg_pool"):
            raise ValueError("FCCBBoxHead flattens the L2C map; with_avg_pool is not supported")
        super().__init__(**kwargs)
        self.l2c, channels = l2c_layers(self.in_channels, convs, post_reduce, nl_before, nl_after, nl_kernel)
        flat = channels * self.roi_feat_area
        # BBoxHead sized the predictors for the raw RoI map; rebuild them for the L2C output.
        if self.with_cls:
            cls_channels = (self.loss_cls.get_cls_channels(self.num_classes) if self.custom_cls_channels
                            else self.num_classes + 1)
            self.fc_cls = MODELS.build({**self.cls_predictor_cfg, "in_features": flat,
                                        "out_features": cls_channels})
        if self.with_reg:
            box_dim = self.bbox_coder.encode_size
            out_dim = box_dim if self.reg_class_agnostic else box_dim * self.num_classes
            reg_cfg = self.reg_predictor_cfg
            if isinstance(reg_cfg, (dict, ConfigDict)):
                reg_cfg = {**reg_cfg, "in_features": flat, "out_features": out_dim}
            self.fc_reg = MODELS.build(reg_cfg)

    def forward(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x = self.l2c(x).flatten(1)
        cls_score = self.fc_cls(x) if self.with_cls else None
        bbox_pred = self.fc_reg(x) if self.with_reg else None
        return cls_score, bbox_pred


# Defaults shared by every instance: MODELS.build and BaseModule copy them, never mutate them.
_LOSS_IOU = dict(type="MSELoss", loss_weight=0.5)  # MaskIoUHead's
# MaskIoUHead's init without its FCs; the L2C layers init themselves (see the module docstring).
_MASK_IOU_INIT = [dict(type="Kaiming", override=dict(name="convs")),
                  dict(type="Normal", std=0.01, override=dict(name="fc_mask_iou"))]


@MODELS.register_module()
class FCCMaskIoUHead(MaskIoUHead):
    """MaskIoUHead whose two FCs become L2C: 4 convs (the last with stride 2) -> L2C -> flatten ->
    Linear(num_classes). Targets and loss are MaskIoUHead's. `num_fcs` must be 2 (the two FCs that
    L2C replaces) and `fc_out_channels` is ignored, so an mmdet MaskIoUHead config only needs its
    type changed."""

    def __init__(self, convs: str = "7x7", post_reduce: bool = True, nl_before: bool = False,
                 nl_after: bool = False, nl_kernel: int = 7, num_convs: int = 4, roi_feat_size: int = 14,
                 in_channels: int = 256, conv_out_channels: int = 256, num_classes: int = 80,
                 loss_iou: dict = _LOSS_IOU, init_cfg: dict | list[dict] | None = _MASK_IOU_INIT,
                 num_fcs: int = 2, fc_out_channels: int | None = None) -> None:
        if num_fcs != 2:
            raise ValueError(f"FCCMaskIoUHead replaces exactly two FCs, got num_fcs={num_fcs}")
        super().__init__(num_convs=num_convs, num_fcs=0, roi_feat_size=roi_feat_size, in_channels=in_channels,
                         conv_out_channels=conv_out_channels, num_classes=num_classes, loss_iou=loss_iou,
                         init_cfg=init_cfg)
        self.l2c, channels = l2c_layers(conv_out_channels, convs, post_reduce, nl_before, nl_after, nl_kernel)
        size = _pair(roi_feat_size)
        self.fc_out_channels = channels * (size[0] // 2) * (size[1] // 2)  # the stride-2 conv halves the map
        self.fc_mask_iou = Linear(self.fc_out_channels, num_classes)

    def forward(self, mask_feat: Tensor, mask_preds: Tensor) -> Tensor:
        pooled = self.max_pool(mask_preds.sigmoid().unsqueeze(1))
        x = torch.cat((mask_feat, pooled), 1)
        for conv in self.convs:
            x = self.relu(conv(x))
        return self.fc_mask_iou(self.l2c(x).flatten(1))
