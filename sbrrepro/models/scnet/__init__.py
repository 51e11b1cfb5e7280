"""SCNet (Vu, Kang and Yoo, "SCNet: Training Inference Sample Consistency for Instance Segmentation", AAAI
2021): the RoI heads of its ablations. `switch_roi_head`: SCNet with its feature relay and global
context each optional; `semantic_cascade_roi_head`: Cascade Mask R-CNN with HTC's semantic branch, to
which those components and the naive sample consistency can be added one at a time; `cascade_passes`:
what both do alike at test. Notes: README.md here."""

from .semantic_cascade_roi_head import SemanticCascadeRoIHead
from .switch_roi_head import SCNetSwitchRoIHead

__all__ = ["SCNetSwitchRoIHead", "SemanticCascadeRoIHead"]
