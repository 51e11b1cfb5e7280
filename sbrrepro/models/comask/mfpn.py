"""CoMask's MFPN neck (Sec. 3.1): MMDetection's FPN with an MSFEM per output level ('paper': after each
of the five outputs, P2-P6), or in place of the FPN's output convs ('code', as the authors' public MFPN)."""

from __future__ import annotations

from typing import Any

from mmdet.models.necks import FPN
from mmdet.registry import MODELS
from mmengine.model import Sequential
from torch import Tensor, nn

from .msfem import MSFEM, XAVIER, check_msfem_args


@MODELS.register_module()
class MFPN(FPN):
    """MMDetection's FPN with an MSFEM on each output level.

    ``'paper'``: one MSFEM (not shared) after each of the ``num_outs`` outputs, i.e. after the FPN's own output
    convs and extra levels (P2-P6 in Mask R-CNN). ``'code'``: an MSFEM replaces the 3x3 output conv of each
    backbone level (P2-P5); max-pooled extra levels pool the new top output, and extra convs (if
    ``add_extra_convs``) are each followed by an MSFEM, as in the authors' MFPN.

    Args: FPN's (keywords after ``num_outs``; ``init_cfg`` defaults to Xavier-uniform on convs and FCs, the
    authors' init), plus ``branches``, ``variant`` and ``norm_groups`` of :class:`MSFEM`. The neck's
    ``norm_cfg``/``act_cfg`` apply to the FPN's own convs only; the authors' COCO config sets neither.
    """

    def __init__(self, in_channels: list[int], out_channels: int, num_outs: int, *, branches: int = 4,
                 variant: str = "paper", norm_groups: int = 32, **fpn_kwargs: Any) -> None:
        # validate first, so a bad setting fails with a message rather than inside FPN or GroupNorm
        check_msfem_args(out_channels, branches, variant, norm_groups)
        if not isinstance(in_channels, (list, tuple)) or not in_channels:
            raise ValueError(f"MFPN in_channels must be a non-empty list of ints, got {in_channels!r}")
        fpn_kwargs.setdefault("init_cfg", XAVIER)
        super().__init__(list(in_channels), out_channels, num_outs, **fpn_kwargs)
        self.branches = branches
        self.variant = variant

        def msfem() -> MSFEM:
            return MSFEM(out_channels, branches=branches, variant=variant, norm_groups=norm_groups)

        if variant == "paper":
            self.msfems = nn.ModuleList(msfem() for _ in range(num_outs))
            return
        levels = len(self.lateral_convs)
        for i, conv in enumerate(self.fpn_convs):
            # the FPN's forward calls fpn_convs[i] as it is, so swapping the entries is the whole change
            self.fpn_convs[i] = msfem() if i < levels else Sequential(conv, msfem())

    def forward(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        outs = super().forward(inputs)
        if self.variant == "code":
            return outs
        return tuple(m(out) for m, out in zip(self.msfems, outs))
