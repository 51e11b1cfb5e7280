"""The "random" level assignment of the GRoIE ablation (ICPR 2020, Table I): each RoI is pooled from
one FPN level drawn uniformly at random, instead of the level its scale selects, in training and in
testing alike."""

from __future__ import annotations

import torch
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class RandomLevelRoIExtractor(SingleRoIExtractor):
    """SingleRoIExtractor whose level for each RoI is drawn uniformly from all levels.

    Args: as for SingleRoIExtractor (`finest_scale` is accepted and unused).

    The draws come from torch's global generator, which MMEngine seeds, so a seeded run repeats its
    assignments. With a single feature map SingleRoIExtractor pools from it without asking for levels.
    """

    def map_roi_levels(self, rois: Tensor, num_levels: int) -> Tensor:
        """A level in [0, num_levels) for each RoI, shape (k,), on the RoIs' device."""
        return torch.randint(0, num_levels, (len(rois),), device=rois.device, dtype=torch.long)
