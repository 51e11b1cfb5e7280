"""The IoU loss of CoMask's per-pixel boxes as the authors' code computes it in effect (mmdet 1.x,
`SID.py` with their fork's `IoULoss`): -log(IoU) with IoUs at most 0.1 raised by 0.1 (a floor against the
degenerate boxes of early training), and the (N, 1) weights broadcast against the (N,) losses, so the
mean over the N x N products is mean(loss) x mean(weight): every pixel regresses with the same weight,
and each weight above the threshold gets the same gradient, mean(loss) / N."""

from __future__ import annotations

from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps
from torch import Tensor, nn


@MODELS.register_module()
class MeanProductIoULoss(nn.Module):
    """loss_weight x mean(-log(IoU')) x mean(weight), IoU' = IoU + floor where IoU <= floor (0: plain IoU).

    Args:
        floor: IoUs at most this are raised by it (0.1, the authors' code); 0 leaves them.
        eps: IoUs are clamped to at least eps before (1e-6).
        loss_weight: the loss's weight (2.0 in the authors' code).
    """

    def __init__(self, floor: float = 0.1, eps: float = 1e-6, loss_weight: float = 1.0) -> None:
        super().__init__()
        if floor < 0:
            raise ValueError(f"floor must be >= 0, got {floor}")
        self.floor, self.eps, self.loss_weight = floor, eps, loss_weight

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None, **kwargs) -> Tensor:
        """pred, target (N, 4) boxes; weight (N,) or (N, 1), or None (all 1)."""
        if pred.shape[0] == 0:
            return pred.sum() * 0.0
        ious = bbox_overlaps(pred, target, is_aligned=True).clamp(min=self.eps)
        if self.floor:
            ious = ious.where(ious > self.floor, ious + self.floor)
        loss = -ious.log().mean()
        return self.loss_weight * (loss if weight is None else loss * weight.mean())
