"""R^3-CNN's mask head M1: HTC's mask head with the feedback conv C1 always in the path."""

from __future__ import annotations

from mmdet.models.roi_heads.mask_heads import HTCMaskHead
from mmdet.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class R3MaskHead(HTCMaskHead):
    """C1 (1x1 feedback conv) -> 4 convs -> upsample -> C2 (1x1 logits).

    The features after the 4 convs are fed back through C1 at the next loop. Unlike HTC's head, the
    first loop also goes through C1 on zero features (adding ReLU(bias)), as the authors' head does,
    so a loop is the same function whether or not it has a predecessor.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(with_conv_res=True, **kwargs)

    def forward(self, x: Tensor, res_feat: Tensor | None = None, return_logits: bool = True,
                return_feat: bool = True) -> Tensor | list[Tensor]:
        if res_feat is None:
            res_feat = x.new_zeros((x.shape[0], self.conv_out_channels, *x.shape[2:]))
        return super().forward(x, res_feat, return_logits, return_feat)
