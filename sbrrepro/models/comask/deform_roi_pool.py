"""Deformable RoI pooling that also runs on the CPU.

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
"""

from __future__ import annotations

import torch
from mmcv import ops
from mmcv.ops import DeformRoIPool, DeformRoIPoolPack
from mmdet.registry import MODELS
from torch import Tensor
from torch.nn.modules.utils import _pair

IMPLS = ("auto", "torch", "mmcv")


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

