"""MMDetection plugins of sbrrepro, loaded by generated configs through `custom_imports`.

Importing this package registers the models and hooks and applies the checkpoint-loading fix, so
resuming works in any process that loads one of our configs (MMDetection's tools/train.py too).
"""

from ..compat import allow_own_checkpoints
from .comask_head import CoMaskCLHead, CoMaskRoIHead
from .deform_roi_pool import DeformRoIPoolCPU, DeformRoIPoolPackCPU, DiscriminativeRoIPool, RatioRoIExtractor
from .fcc_heads import FCCBBoxHead, FCCMaskIoUHead
from .groie import GRoIE
from .htc_roi_head import HTCMeanMaskRoIHead
from .iou_recorder import IoUHistogramHook, IoURecordingSampler
from .ms_subnet import MultiScaleSubnetRoIExtractor
from .msfem import MFPN, MSFEM
from .non_local import NonLocal2dK
from .r3_mask_head import R3MaskHead
from .r3_roi_head import R3RoIHead
from .random_level import RandomLevelRoIExtractor
from .scnet_heads import SCNetSwitchRoIHead, SemanticCascadeRoIHead

allow_own_checkpoints()

__all__ = ["CoMaskCLHead", "CoMaskRoIHead", "DeformRoIPoolCPU", "DeformRoIPoolPackCPU", "DiscriminativeRoIPool",
           "FCCBBoxHead", "FCCMaskIoUHead", "GRoIE", "HTCMeanMaskRoIHead", "IoUHistogramHook", "IoURecordingSampler",
           "MFPN", "MSFEM", "MultiScaleSubnetRoIExtractor", "NonLocal2dK", "R3MaskHead", "R3RoIHead",
           "RandomLevelRoIExtractor", "RatioRoIExtractor", "SCNetSwitchRoIHead", "SemanticCascadeRoIHead"]
