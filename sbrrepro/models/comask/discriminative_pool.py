"""D2Det's discriminative RoI pooling (Cao et al., CVPR 2020), the classification branch's pooling in the
CoMask authors' code, rebuilt on the deformable RoI pooling of `deform_roi_pool` (so it also runs on the
CPU): a 3x3 pooled feature, FCs giving a 7x7 offset field (nearest-upsampled to 14x14), deformable pooling
at 14x14, and an adaptive weighted pooling (3x3 window, stride 2) down to 7x7.
"""

from __future__ import annotations

import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmdet.registry import MODELS
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .deform_roi_pool import deform_roi_pool

WEIGHTINGS = ("awp", "sa")


class AdaptiveWeightedPool(nn.Module):
    """Pools a map by 2 (3x3 window, stride 2, padding 1) with learned per-position, per-channel weights
    from a 3x3 conv (bias-free, zero-initialised: it starts as plain average pooling).

    'awp': D2Det's AWPool, which the authors' configured `DeformRoIPoolingPack` uses: w = exp(12 *
    sigmoid(InstanceNorm(conv(x)))), out = avgpool(x * w) / avgpool(w).
    'sa': the authors' `SpatialAttention` (their `DeformRoIPoolingWithAttention`, not in their COCO config):
    w = sigmoid(GN(conv(x))), out = avgpool(x * w).
    """

    GATE = 12.0  # D2Det's SoftGate coefficient

    def __init__(self, channels: int, weighting: str = "awp", norm_cfg: dict | None = None) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.weighting = weighting
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        if weighting == "awp":
            self.norm = nn.InstanceNorm2d(channels, affine=True)
        else:
            self.norm = build_norm_layer(norm_cfg or dict(type="GN", num_groups=32), channels)[1]
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.zeros_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.norm(self.conv(x))
        if self.weighting == "sa":
            return F.avg_pool2d(x * logits.sigmoid(), 3, 2, 1)
        weight = (self.GATE * logits.sigmoid()).exp()
        return F.avg_pool2d(x * weight, 3, 2, 1) / F.avg_pool2d(weight, 3, 2, 1)


@MODELS.register_module()
class DiscriminativeRoIPool(nn.Module):
    """D2Det's discriminative RoI pooling (the authors' `DeformRoIPoolingPack`, rebuilt on mmcv's
    non-position-sensitive deformable pooling): an `offset_size` (3x3) pooled feature, `num_offset_fcs` FCs
    (ReLU between, the last zero-initialised) giving an output_size offset field, nearest-upsampled x2,
    deformable pooling at 2 x output_size, then `AdaptiveWeightedPool` down to output_size.

    `sampling_ratio` 1 stands for the authors' sample_per_part=1 (one point per bin; mmcv's point sits at
    the bin centre), `gamma` for trans_std. The spatial_scale argument lets RoI extractors build it.
    """

    def __init__(self, output_size: int | tuple[int, int] = 7, output_channels: int = 256,
                 spatial_scale: float = 1.0, sampling_ratio: int = 1, gamma: float = 0.1, offset_size: int = 3,
                 num_offset_fcs: int = 3, deform_fc_channels: int = 1024, weighting: str = "awp",
                 norm_cfg: dict | None = None) -> None:
        super().__init__()
        if num_offset_fcs < 1:
            raise ValueError(f"num_offset_fcs must be >= 1, got {num_offset_fcs}")
        self.output_size = _pair(output_size)
        self.fine_size = (2 * self.output_size[0], 2 * self.output_size[1])
        self.offset_size = _pair(offset_size)
        self.output_channels = output_channels
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.gamma = float(gamma)
        layers: list[nn.Module] = []
        channels = self.offset_size[0] * self.offset_size[1] * output_channels
        for i in range(num_offset_fcs):
            last = i == num_offset_fcs - 1
            out = 2 * self.output_size[0] * self.output_size[1] if last else deform_fc_channels
            layers.append(nn.Linear(channels, out))
            if not last:
                layers.append(nn.ReLU(inplace=True))
            channels = out
        self.offset_fc = nn.Sequential(*layers)
        self.pool = AdaptiveWeightedPool(output_channels, weighting, norm_cfg)
        self.init_weights()

    def init_weights(self) -> None:
        # zero offsets at the start, as mmcv's and D2Det's packs
        nn.init.zeros_(self.offset_fc[-1].weight)
        nn.init.zeros_(self.offset_fc[-1].bias)
        self.pool.init_weights()

    def _pool(self, input: Tensor, rois: Tensor, offset: Tensor | None, size: tuple[int, int]) -> Tensor:
        return deform_roi_pool(input, rois, offset, size, self.spatial_scale, self.sampling_ratio, self.gamma)

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        if input.shape[1] != self.output_channels:
            raise ValueError(f"expected {self.output_channels} input channels, got {input.shape[1]}")
        n = rois.shape[0]
        if n == 0:
            return input.new_zeros(0, self.output_channels, *self.output_size)
        coarse = self._pool(input, rois, None, self.offset_size)
        offset = self.offset_fc(coarse.flatten(1)).view(n, 2, *self.output_size)
        offset = F.interpolate(offset, size=self.fine_size, mode="nearest")
        return self.pool(self._pool(input, rois, offset, self.fine_size))
