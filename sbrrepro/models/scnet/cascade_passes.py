"""What both SCNet heads' test paths do alike: a batch's semantic and global context features, and a
cascade's tensor-mode box pass (MMDetection's `_refine_roi` on the proposals of every image)."""

from __future__ import annotations

import torch
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import InstanceList
from torch import Tensor


def context_feats(head, x: tuple[Tensor, ...]) -> tuple[Tensor | None, Tensor | None]:
    """A batch's semantic and global context features (None for a branch the head lacks)."""
    return (head.semantic_head(x)[1] if head.with_semantic else None,
            head.glbctx_head(x)[1] if head.with_glbctx else None)


def tensor_box_pass(head, x: tuple[Tensor, ...], rpn_results_list: InstanceList,
                    batch_data_samples: SampleList) -> tuple:
    """A cascade's tensor-mode box pass: the batch's semantic and global context features, the final RoIs
    of every image together, each stage's class scores and box deltas, and the number of proposals per
    image."""
    semantic_feat, glbctx_feat = context_feats(head, x)
    proposals = [res.bboxes for res in rpn_results_list]
    counts = tuple(len(p) for p in proposals)
    rois, cls_scores, bbox_preds = head._refine_roi(
        x=x, rois=bbox2roi(proposals), batch_img_metas=[s.metainfo for s in batch_data_samples],
        num_proposals_per_img=counts, semantic_feat=semantic_feat, glbctx_feat=glbctx_feat)
    return semantic_feat, glbctx_feat, torch.cat(rois), cls_scores, bbox_preds, counts
