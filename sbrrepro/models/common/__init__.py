"""What several papers' models use: the IoU recorder (the IoU distributions of the training RoIs, SBR-CNN
Fig. 3, recorded for any model), HTC with its test-time mask the mean of every stage's
(`htc_mean_mask`), and HTC's fusion of semantic features into RoI features (`semantic_fusion`), which
that head and SCNet's semantic cascade share; CocoMetric with the mask AP_S/M/L under both size
conventions, box area and mask area (`coco_sizes`). Notes: README.md here."""

from .coco_sizes import TwoConventionCocoMetric
from .htc_mean_mask import HTCMeanMaskRoIHead
from .iou_recorder import IoUHistogramHook, IoURecordingSampler
from .semantic_fusion import fuse_semantic

__all__ = ["HTCMeanMaskRoIHead", "IoUHistogramHook", "IoURecordingSampler", "TwoConventionCocoMetric", "fuse_semantic"]
