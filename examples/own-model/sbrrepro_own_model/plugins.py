"""The MMDetection module the model needs, registered when sbrrepro's plugins are imported (the
generated configs' `custom_imports`), in `sbrrepro run` and in every training process."""

from __future__ import annotations

import torch
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import MODELS
from torch import nn


@MODELS.register_module()
class TemperedBBoxHead(Shared2FCBBoxHead):
    """Mask R-CNN's box head whose class logits are divided by a learned temperature (starting at 1)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.temperature = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls_score, bbox_pred = super().forward(x)
        return cls_score / self.temperature, bbox_pred
