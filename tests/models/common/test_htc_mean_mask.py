"""HTC with its test-time mask the mean of every stage's (sbrrepro/models/common/htc_mean_mask.py), with
its semantic branch fused into the RoI features (semantic_fusion.py), on a small detector built from
MMDetection's shipped HTC config. (Without the semantic branch, as SBR-CNN's baselines:
tests/plans/test_baselines.py.)"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mmdet")

from tests.helpers import (  # noqa: E402
    IMAGE,
    build,
    dead_layers,
    forward_tensor,
    merged_test_mask,
    predict,
    shipped_model,
    train_step,
)

ROIS = torch.tensor([[0, 8.0, 8.0, 60.0, 70.0], [0, 30.0, 20.0, 120.0, 90.0]])


@pytest.mark.training
def test_htc_with_semantic():
    """Full HTC (interleaved, mask information flow, semantic branch) trains with MMDetection's loss and
    predicts with HTCMeanMaskRoIHead's mean of the three stages' masks (each with the semantic features,
    as MMDetection's training branch computes them)."""
    from mmdet.models.roi_heads import HybridTaskCascadeRoIHead

    cfg = shipped_model("htc/htc_r50_fpn_1x_coco.py")
    cfg["roi_head"]["type"] = "HTCMeanMaskRoIHead"
    model = build(cfg)
    head = model.roi_head
    assert model.with_semantic and head.interleaved and head.mask_info_flow
    losses = train_step(cfg, model)
    assert not dead_layers(model), dead_layers(model)
    assert {"loss_semantic_seg"} | {f"s{i}.{k}" for i in range(3) for k in ("loss_cls", "loss_bbox", "loss_mask")} \
        <= set(losses)
    predict(cfg, model)
    ((cls_scores, bbox_preds, masks),) = forward_tensor(cfg, model)  # per image, as the tensor mode's users read it
    assert len(cls_scores) == len(bbox_preds) == len(masks) == 2
    with torch.no_grad():
        x = model.extract_feat(torch.randn(1, 3, IMAGE, IMAGE))
        _, semantic = head.semantic_head(x)
        merged = merged_test_mask(head, x, semantic, ROIS)
        stages = torch.stack([HybridTaskCascadeRoIHead._mask_forward(head, s, x, ROIS, semantic)["mask_preds"].sigmoid()
                              for s in range(3)])
    assert not torch.allclose(stages[0], stages[-1])
    torch.testing.assert_close(merged, stages.mean(0))
