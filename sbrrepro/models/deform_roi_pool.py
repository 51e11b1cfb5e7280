"""Deformable RoI pooling that also runs on the CPU, and D2Det's discriminative RoI pooling on top of it
(Cao et al., CVPR 2020; the classification branch's pooling in the CoMask authors' code).

mmcv 2.1's `DeformRoIPool` has CUDA/MLU/NPU kernels only. `deform_roi_pool_torch` computes exactly the op of
mmcv's kernel (`csrc/common/cuda/deform_roi_pool_cuda_kernel.cuh`), in plain torch ops:

- the RoI is shifted by -0.5 pixel in feature coordinates (x1 * scale - 0.5, ..., as `RoIAlign(aligned=True)`)
  and its size is not clamped to 1 (`aligned=False` would clamp it);
- bin (ph, pw) is moved by (gamma * roi_w * offset[:, 0, ph, pw], gamma * roi_h * offset[:, 1, ph, pw]);
- sampling_ratio x sampling_ratio points per bin (ceil(roi_h / pooled_h) x ceil(roi_w / pooled_w) per RoI
  when 0), each sampled bilinearly with mmcv's border rule (0 beyond one pixel outside the map, clamped to
  the edge inside that band), and averaged.

With zero offsets it is therefore `RoIAlign(aligned=True, pool_mode='avg')`. Its gradient is autograd's
exact one; mmcv's hand-written offset gradient differs from the exact derivative in the border bands only
(it uses the unclamped coordinates there). `DeformRoIPoolCPU` / `DeformRoIPoolPackCPU` are mmcv's modules
(same arguments and parameters) that call mmcv's kernel on CUDA tensors and this op elsewhere.

`DiscriminativeRoIPool` is D2Det's two-pass pooling, rebuilt on that op: a 3x3 pooled feature, 3 FCs giving
a 7x7 offset field (nearest-upsampled to 14x14), deformable pooling at 14x14, and an adaptive weighted
pooling (3x3 window, stride 2) down to 7x7. `RatioRoIExtractor` maps each RoI to a level by its share of
its image's area, as the authors' `SingleRoIExtractorWithRatio`; a 3.x extractor gets no image metas, so
the RoI head passes the image sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmcv import ops
from mmcv.cnn import build_norm_layer
from mmcv.ops import DeformRoIPool, DeformRoIPoolPack
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.registry import MODELS
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

IMPLS = ("auto", "torch", "mmcv")
WEIGHTINGS = ("awp", "sa")
LEVEL_MAPPINGS = ("ratio", "scale")


def _bilinear(feats: Tensor, height: int, width: int, batch: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """mmcv's `bilinear_interpolate` at points (y, x) of image `batch`: feats is the (B*H*W, C) view of the
    input, batch/y/x broadcast to one shape S; returns S + (C,)."""
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y_low, x_low = y.floor().long(), x.floor().long()
    # at or past the last row/column both corners are that row/column (the weights then do not matter)
    y_edge, x_edge = y_low >= height - 1, x_low >= width - 1
    y_low = torch.where(y_edge, height - 1, y_low)
    x_low = torch.where(x_edge, width - 1, x_low)
    y_high = torch.where(y_edge, y_low, y_low + 1)
    x_high = torch.where(x_edge, x_low, x_low + 1)
    y = torch.where(y_edge, y_low.to(y.dtype), y)
    x = torch.where(x_edge, x_low.to(x.dtype), x)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    base = batch * (height * width)

    def at(yy: Tensor, xx: Tensor) -> Tensor:
        index = (base + yy * width + xx).expand(outside.shape)
        return feats[index.reshape(-1)].view(*outside.shape, feats.shape[1])

    val = ((hy * hx)[..., None] * at(y_low, x_low) + (hy * lx)[..., None] * at(y_low, x_high)
           + (ly * hx)[..., None] * at(y_high, x_low) + (ly * lx)[..., None] * at(y_high, x_high))
    return val.masked_fill(outside[..., None], 0.0)


def deform_roi_pool_torch(input: Tensor, rois: Tensor, offset: Tensor | None, output_size: int | tuple[int, int],
                          spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1) -> Tensor:
    """mmcv's `deform_roi_pool` in torch ops (see the module docstring): input (B, C, H, W), rois (n, 5) as
    (batch index, x1, y1, x2, y2) in image coordinates, offset (n, 2, ph, pw) or None; returns (n, C, ph, pw).
    Differentiable in input and offset."""
    ph, pw = _pair(output_size)
    num_imgs, channels, height, width = input.shape
    n = rois.shape[0]
    if n == 0:
        return input.new_zeros(0, channels, ph, pw)
    rois = rois.to(input.dtype)
    start_w = rois[:, 1] * spatial_scale - 0.5
    start_h = rois[:, 2] * spatial_scale - 0.5
    roi_w = rois[:, 3] * spatial_scale - 0.5 - start_w
    roi_h = rois[:, 4] * spatial_scale - 0.5 - start_h
    bin_w, bin_h = roi_w / pw, roi_h / ph
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(roi_h, sampling_ratio, dtype=torch.long)
    else:  # the kernel's ceilf(roi / pooled), cast to int: no samples (output 0) when <= 0
        grid_h, grid_w = torch.ceil(roi_h / ph).long(), torch.ceil(roi_w / pw).long()
    max_h, max_w = max(int(grid_h.max()), 1), max(int(grid_w.max()), 1)

    def per_roi(t: Tensor) -> Tensor:  # (n,) -> (n, 1, 1, 1, 1) against (n, ph, pw, gy, gx)
        return t.view(n, 1, 1, 1, 1)

    shift_w = start_w.view(n, 1, 1)
    shift_h = start_h.view(n, 1, 1)
    if offset is not None and offset.numel() > 0:
        shift_w = shift_w + gamma * roi_w.view(n, 1, 1) * offset[:, 0].to(input.dtype)
        shift_h = shift_h + gamma * roi_h.view(n, 1, 1) * offset[:, 1].to(input.dtype)
    shift_w = shift_w.expand(n, ph, pw)[..., None, None]
    shift_h = shift_h.expand(n, ph, pw)[..., None, None]
    kw = dict(device=input.device, dtype=input.dtype)
    bin_y = torch.arange(ph, **kw).view(1, ph, 1, 1, 1)
    bin_x = torch.arange(pw, **kw).view(1, 1, pw, 1, 1)
    sub_y = torch.arange(max_h, **kw).view(1, 1, 1, max_h, 1)
    sub_x = torch.arange(max_w, **kw).view(1, 1, 1, 1, max_w)
    step_h = per_roi(bin_h) / per_roi(grid_h.clamp(min=1).to(input.dtype))
    step_w = per_roi(bin_w) / per_roi(grid_w.clamp(min=1).to(input.dtype))
    y = shift_h + bin_y * per_roi(bin_h) + (sub_y + 0.5) * step_h
    x = shift_w + bin_x * per_roi(bin_w) + (sub_x + 0.5) * step_w
    y, x = torch.broadcast_tensors(y, x)
    feats = input.permute(0, 2, 3, 1).reshape(-1, channels)
    vals = _bilinear(feats, height, width, per_roi(rois[:, 0].long()), y, x)  # (n, ph, pw, gy, gx, C)
    used = (sub_y < per_roi(grid_h)) & (sub_x < per_roi(grid_w))  # RoIs with a smaller adaptive grid
    vals = vals.masked_fill(~used[..., None], 0.0)
    count = (grid_h * grid_w).clamp(min=1).to(input.dtype).view(n, 1, 1, 1)
    return (vals.sum((3, 4)) / count).permute(0, 3, 1, 2).contiguous()


def deform_roi_pool(input: Tensor, rois: Tensor, offset: Tensor | None, output_size: int | tuple[int, int],
                    spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1,
                    impl: str = "auto") -> Tensor:
    """mmcv's kernel for CUDA tensors ('auto') or always ('mmcv'); `deform_roi_pool_torch` otherwise."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "mmcv" or (impl == "auto" and input.is_cuda):
        return ops.deform_roi_pool(input, rois, offset, _pair(output_size), spatial_scale, sampling_ratio, gamma)
    return deform_roi_pool_torch(input, rois, offset, output_size, spatial_scale, sampling_ratio, gamma)


@MODELS.register_module()
class DeformRoIPoolCPU(DeformRoIPool):
    """mmcv's `DeformRoIPool` (same arguments) that also runs on the CPU."""

    def forward(self, input: Tensor, rois: Tensor, offset: Tensor | None = None) -> Tensor:
        return deform_roi_pool(input, rois, offset, self.output_size, self.spatial_scale, self.sampling_ratio,
                               self.gamma)


@MODELS.register_module()
class DeformRoIPoolPackCPU(DeformRoIPoolPack):
    """mmcv's `DeformRoIPoolPack` (same arguments and parameters: pool, 3 FCs to offsets, pool again) that
    also runs on the CPU."""

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:  # type: ignore[override]
        pool = dict(output_size=self.output_size, spatial_scale=self.spatial_scale,
                    sampling_ratio=self.sampling_ratio, gamma=self.gamma)
        x = deform_roi_pool(input, rois, None, **pool)
        offset = self.offset_fc(x.flatten(1)).view(rois.shape[0], 2, *self.output_size)
        return deform_roi_pool(input, rois, offset, **pool)


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


def ratio_levels(rois: Tensor, img_areas: Tensor, num_levels: int, max_level: int = 3) -> Tensor:
    """The authors' level of each RoI: ceil(max_level - log2(image area / box area)), clamped to
    [0, num_levels - 1]. Box areas without the 1.x +1; `img_areas` is per RoI."""
    box_areas = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).clamp(min=1e-6)
    levels = torch.ceil(max_level - torch.log2(img_areas / box_areas + 1e-12))
    return levels.clamp(min=0, max=num_levels - 1).long()


@MODELS.register_module()
class RatioRoIExtractor(SingleRoIExtractor):
    """SingleRoIExtractor whose RoI layer may be one of our registered layers (DiscriminativeRoIPool,
    DeformRoIPoolCPU, ...) as well as an mmcv op, and whose level mapping is the authors' ratio rule
    (`level_mapping='ratio'`, see `ratio_levels`) or FPN's usual scale rule ('scale').

    `forward(feats, rois, roi_scale_factor=None, img_shapes=None)`: img_shapes is (num_images, 2) as
    (h, w), each image's `img_shape`. Without it the padded batch size (the finest map's size times its
    stride) stands in for every image.
    """

    def __init__(self, roi_layer: dict, out_channels: int, featmap_strides: list[int], finest_scale: int = 56,
                 level_mapping: str = "ratio", max_level: int = 3, init_cfg: dict | list[dict] | None = None) -> None:
        if level_mapping not in LEVEL_MAPPINGS:
            raise ValueError(f"level_mapping must be one of {LEVEL_MAPPINGS}, got {level_mapping!r}")
        super().__init__(roi_layer=roi_layer, out_channels=out_channels, featmap_strides=featmap_strides,
                         finest_scale=finest_scale, init_cfg=init_cfg)
        self.level_mapping = level_mapping
        self.max_level = max_level

    def build_roi_layers(self, layer_cfg: dict, featmap_strides: list[int]) -> nn.ModuleList:
        cfg = dict(layer_cfg)
        layer_type = cfg.pop("type")
        if isinstance(layer_type, str):
            layer_cls = getattr(ops, layer_type, None) or MODELS.get(layer_type)
            if layer_cls is None:
                raise KeyError(f"RoI layer {layer_type!r} is neither an mmcv op nor registered in MODELS")
        else:
            layer_cls = layer_type
        return nn.ModuleList([layer_cls(spatial_scale=1 / s, **cfg) for s in featmap_strides])

    def _levels(self, feats: tuple[Tensor, ...], rois: Tensor, img_shapes: Tensor | None) -> Tensor:
        if self.level_mapping == "scale":
            return self.map_roi_levels(rois, len(feats))
        if img_shapes is None:
            stride = self.featmap_strides[0]
            areas = rois.new_full((rois.shape[0],), float(feats[0].shape[-2] * feats[0].shape[-1] * stride ** 2))
        else:
            shapes = torch.as_tensor(img_shapes, dtype=rois.dtype, device=rois.device).view(-1, 2)
            areas = shapes.prod(1)[rois[:, 0].long()]
        return ratio_levels(rois, areas, len(feats), self.max_level)

    def forward(self, feats: tuple[Tensor, ...], rois: Tensor, roi_scale_factor: float | None = None,
                img_shapes: Tensor | None = None) -> Tensor:
        rois = rois.type_as(feats[0])
        out_size = self.roi_layers[0].output_size
        roi_feats = feats[0].new_zeros(rois.shape[0], self.out_channels, *out_size)
        if len(feats) == 1:
            return self.roi_layers[0](feats[0], rois) if len(rois) else roi_feats
        levels = self._levels(feats, rois, img_shapes)
        if roi_scale_factor is not None:
            rois = self.roi_rescale(rois, roi_scale_factor)
        for i, feat in enumerate(feats):
            inds = (levels == i).nonzero(as_tuple=False).squeeze(1)
            if inds.numel() > 0:
                roi_feats[inds] = self.roi_layers[i](feat, rois[inds])
            else:
                # keep every level's layer (and map) in the graph: DDP without find_unused_parameters
                roi_feats = roi_feats + sum(p.view(-1)[0] for p in self.parameters()) * 0.0 + feat.sum() * 0.0
        return roi_feats

