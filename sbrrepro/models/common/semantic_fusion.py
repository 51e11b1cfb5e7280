"""HTC's fusion of its semantic features into RoI features, written once for every head that has HTC's
semantic branch (`semantic_head`, `semantic_roi_extractor`, `semantic_fusion`): the semantic feature map
is pooled for the same RoIs, brought to the RoI features' size and added, as MMDetection's
HybridTaskCascadeRoIHead does in its box and mask forwards."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def fuse_semantic(head, feats: Tensor, rois: Tensor, semantic_feat: Tensor | None, branch: str) -> Tensor:
    """`feats` (RoI features of `rois`) plus the pooled semantic features when `head` fuses them into
    `branch` ('bbox' or 'mask') and has them; `feats` unchanged otherwise."""
    if not head.with_semantic or branch not in head.semantic_fusion or semantic_feat is None:
        return feats
    semantic = head.semantic_roi_extractor([semantic_feat], rois)
    if semantic.shape[-2:] != feats.shape[-2:]:
        semantic = F.adaptive_avg_pool2d(semantic, feats.shape[-2:])
    return feats + semantic
