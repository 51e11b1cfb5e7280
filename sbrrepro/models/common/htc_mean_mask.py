"""HTC whose test-time mask is the mean of every stage's mask, as the HTC paper, MMDetection 2.x and the
SBR-CNN authors' HTC compute it (SBR-CNN's HTC baselines; SCNet's semantic cascade builds on it).

MMDetection 3.3's `HybridTaskCascadeRoIHead._mask_forward` appends to the list it averages after its
stage loop, so only the last stage's mask is kept; and without mask information flow it takes each
head's (logits, features) pair for logits. Training is MMDetection's own.
"""

from __future__ import annotations

from mmdet.models.roi_heads import HybridTaskCascadeRoIHead
from mmdet.registry import MODELS
from torch import Tensor

from .semantic_fusion import fuse_semantic


@MODELS.register_module()
class HTCMeanMaskRoIHead(HybridTaskCascadeRoIHead):
    def _mask_forward(self, stage: int, x: tuple[Tensor, ...], rois: Tensor, semantic_feat: Tensor | None = None,
                      training: bool = True) -> dict[str, Tensor | list[Tensor]]:
        if training:
            return super()._mask_forward(stage, x, rois, semantic_feat, training)
        extractor = self.mask_roi_extractor[stage]
        feats = fuse_semantic(self, extractor(x[:extractor.num_inputs], rois), rois, semantic_feat, "mask")
        # predict_mask averages the sigmoid of every logit map in this list (merge_aug_masks)
        masks, last_feat = [], None
        for head in self.mask_head:
            if self.mask_info_flow:
                logits, last_feat = head(feats, last_feat)
            else:
                logits = head(feats, return_feat=False)
            masks.append(logits)
        return dict(mask_preds=masks)
