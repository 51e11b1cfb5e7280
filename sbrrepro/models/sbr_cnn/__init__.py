"""SBR-CNN (Rossi, Karimi, Prati, "Self-Balanced R-CNN for Instance Segmentation", JVCIR 2022): R^3-CNN's
looped RoI head (`r3_roi_head`) and mask head (`r3_mask_head`), the FCC heads that replace the detection
and Mask IoU heads' FCs by convolutions (`fcc_heads`), and the non-local block with kxk kernels they and
GRoIE may use (`non_local`). GRoIE itself is `sbrrepro.models.groie`. Notes: README.md here."""

from .fcc_heads import FCCBBoxHead, FCCMaskIoUHead
from .non_local import NonLocal2dK
from .r3_mask_head import R3MaskHead
from .r3_roi_head import R3RoIHead

__all__ = ["FCCBBoxHead", "FCCMaskIoUHead", "NonLocal2dK", "R3MaskHead", "R3RoIHead"]
