"""CoMask (Chen et al., "Accurate Instance Segmentation via Collaborative Learning"): the MFPN neck (an
MSFEM per FPN level) and the collaborative-learning RoI head, with D2Det's discriminative RoI pooling and
the authors' ratio level mapping for its extractors. How each part was reconstructed: README.md here.

One module per part: `msfem` and `mfpn` (the neck), `geometry` (the head's box geometry, pure functions),
`cl_head` (the collaborative-learning head), `iou_loss` (its box loss as the authors' code computes it),
`roi_head` (the second stage), `discriminative_pool`
(D2Det's pooling), `ratio_extractor` (the level mapping) and `deform_roi_pool` (mmcv's deformable RoI
pooling with a CPU path, which the discriminative pooling is built on).
"""

from .cl_head import CoMaskCLHead
from .deform_roi_pool import DeformRoIPoolCPU, DeformRoIPoolPackCPU
from .discriminative_pool import DiscriminativeRoIPool
from .iou_loss import MeanProductIoULoss
from .mfpn import MFPN
from .msfem import MSFEM
from .ratio_extractor import RatioRoIExtractor
from .roi_head import CoMaskRoIHead

__all__ = ["MFPN", "MSFEM", "CoMaskCLHead", "CoMaskRoIHead", "DeformRoIPoolCPU", "DeformRoIPoolPackCPU",
           "DiscriminativeRoIPool", "MeanProductIoULoss", "RatioRoIExtractor"]
