"""SBR-CNN's non-local block: the embedded-Gaussian non-local block of Wang et al. whose g, theta,
phi and output convolutions have kxk kernels (the authors' mmcv patch; mmcv 2.1's NonLocal2d is
fixed at 1x1 and rejects a kernel size).

Registered in MMDetection's MODELS, so `mmcv.cnn.build_plugin_layer(dict(type='NonLocal2dK', ...))`
finds it under the mmdet default scope (as a Runner sets it), e.g. as GRoIE's post-processing module.
"""

from __future__ import annotations

from functools import partial

import torch
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmengine.model import constant_init, normal_init
from torch import Tensor, nn

_MODES = ("embedded_gaussian", "dot_product", "gaussian")


@MODELS.register_module()
class NonLocal2dK(nn.Module):
    """y = x + conv_out(softmax(theta(x)^T phi(x)) g(x)) with kxk convolutions (padding k//2).

    kernel_size=1 is mmcv's NonLocal2d (same parameter names, so its weights load as they are).
    conv_out starts at zero, so a new block is the identity. A plain nn.Module with its own
    init_weights, which an mmengine BaseModule/Sequential parent calls after applying its own init_cfg:
    as a direct child of one, the block gets its zero-init back whatever that init_cfg did.
    """

    _abbr_ = "nonlocal_block"  # the name build_plugin_layer gives it, as for mmcv's NonLocal2d

    def __init__(self, in_channels: int, reduction: int = 2, use_scale: bool = True, kernel_size: int = 1,
                 mode: str = "embedded_gaussian", conv_cfg: dict | None = None,
                 norm_cfg: dict | None = None) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"NonLocal2dK mode must be one of {_MODES}, got {mode!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"NonLocal2dK needs an odd kernel_size (the map keeps its size), got {kernel_size}")
        self.in_channels = in_channels
        self.inter_channels = max(in_channels // reduction, 1)
        self.use_scale = use_scale
        self.kernel_size = kernel_size
        self.mode = mode
        conv = partial(ConvModule, kernel_size=kernel_size, padding=kernel_size // 2, conv_cfg=conv_cfg,
                       act_cfg=None)
        self.g = conv(in_channels, self.inter_channels)
        if mode != "gaussian":  # the Gaussian mode compares the raw features
            self.theta = conv(in_channels, self.inter_channels)
            self.phi = conv(in_channels, self.inter_channels)
        # as in mmcv, a norm layer (if any) only on the output projection
        self.conv_out = conv(self.inter_channels, in_channels, norm_cfg=norm_cfg)
        self.init_weights()

    def init_weights(self, std: float = 0.01) -> None:
        for name in ("g", "theta", "phi"):
            if hasattr(self, name):
                normal_init(getattr(self, name).conv, std=std)
        # zero output: the block starts as the identity (a pretrained path is not disturbed)
        constant_init(self.conv_out.norm if self.conv_out.with_norm else self.conv_out.conv, 0)

    def forward(self, x: Tensor) -> Tensor:
        # flatten(2), not view(n, c, -1): the latter fails on a batch of zero RoIs
        g_x = self.g(x).flatten(2).transpose(1, 2)  # [N, HW, C']
        if self.mode == "gaussian":
            theta_x, phi_x = x.flatten(2).transpose(1, 2), x.flatten(2)
        else:
            theta_x = self.theta(x).flatten(2).transpose(1, 2)  # [N, HW, C']
            phi_x = self.phi(x).flatten(2)  # [N, C', HW]
        weight = torch.matmul(theta_x, phi_x)  # [N, HW, HW]
        if self.mode == "dot_product":
            weight = weight / weight.shape[-1]
        else:
            if self.mode == "embedded_gaussian" and self.use_scale:
                weight = weight / theta_x.shape[-1] ** 0.5
            weight = weight.softmax(dim=-1)
        y = torch.matmul(weight, g_x).transpose(1, 2).reshape(x.shape[0], self.inter_channels, *x.shape[2:])
        return x + self.conv_out(y)
