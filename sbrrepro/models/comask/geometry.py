"""CoMask's box geometry, as pure functions on tensors: the training jitter of the positive RoIs, the
per-pixel boxes decoded from the collaborative-learning head's distances, the mask's weights on the box
grid (M_s) and the weighted box of Eqs. 8-9."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MASK_TO_GRID = ("avg", "bilinear")


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


def clip_boxes(boxes: Tensor, max_shape: Tensor) -> Tensor:
    """Boxes (n, 4) clipped to per-box image sizes (n, 2) as (h, w)."""
    x = torch.minimum(boxes[:, 0::2].clamp(min=0), max_shape[:, 1:2])
    y = torch.minimum(boxes[:, 1::2].clamp(min=0), max_shape[:, 0:1])
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)
