"""CoMask's multi-scale feature enhancement module (MSFEM, Sec. 3.1, Eqs. 1-7), in two variants:

- ``'paper'`` (Eqs. 1-7): branches F_i = C2^i(F), i = 0..B-1 (C2: 3x3 stride-2 conv + GN + ReLU; F_0 = F),
  each upsampled back to F's size, concatenated (B*C channels), a 1x1 conv to C (F_f), channel attention
  (GAP, FC, ReLU, FC, sigmoid) multiplied onto F_f, then a 3x3 stride-1 conv (F_O).
- ``'code'``: the authors' public module (``SIM`` with ``attention='RCA'``): cascaded branches, a plain 1x1
  ``reduce`` conv and a residual channel attention; with fewer than 3 branches it returns its input.

Where the 'paper' variant's choices come from: README.md beside this file. Registered in MMDetection's
MODELS; `mfpn.MFPN` is the neck built from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

VARIANTS = ("paper", "code")
SUPPORTED_BRANCHES = (1, 2, 4)  # the paper's Table 2 (CoMask_1, CoMask_2, CoMask_4)
# the authors' init: xavier_init on every Conv2d (their MFPN.init_weights) and xavier_uniform_ on the attention FCs
XAVIER = dict(type="Xavier", layer=["Conv2d", "Linear"], distribution="uniform")


def check_msfem_args(channels: int, branches: int, variant: str, norm_groups: int, reduction: int = 4) -> None:
    """Raise ValueError, naming the argument, for settings MSFEM cannot build."""
    if variant not in VARIANTS:
        raise ValueError(f"MSFEM variant must be one of {VARIANTS}, got {variant!r}")
    if isinstance(branches, bool) or branches not in SUPPORTED_BRANCHES:
        raise ValueError(f"MSFEM branches must be one of {SUPPORTED_BRANCHES} (the paper's Table 2), got {branches!r}")
    if not isinstance(norm_groups, int) or norm_groups < 1:
        raise ValueError(f"MSFEM norm_groups must be a positive int, got {norm_groups!r}")
    if not isinstance(channels, int) or channels < 1 or channels % norm_groups:
        raise ValueError(f"MSFEM channels ({channels!r}) must be a positive multiple of norm_groups ({norm_groups}) "
                         "for GroupNorm")
    if not isinstance(reduction, int) or reduction < 1 or channels // reduction < 1:
        raise ValueError(f"MSFEM reduction must be a positive int at most channels ({channels}), got {reduction!r}")


def _down(in_channels: int, channels: int, norm_groups: int, bias: bool) -> nn.Sequential:
    """C2: 3x3 stride-2 conv + GN + ReLU. Padding 1 keeps a 1x1 or 2x2 map valid (it becomes 1x1)."""
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, stride=2, padding=1, bias=bias),
                         nn.GroupNorm(norm_groups, channels), nn.ReLU(inplace=True))


def _upsample(x: Tensor, size: torch.Size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ChannelGate(nn.Module):
    """x * sigmoid(FC(ReLU(FC(GAP(x))))): Eqs. 4-6 with the code's C/reduction bottleneck and bias-free FCs."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction, bias=False)
        self.fc2 = nn.Linear(channels // reduction, channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        v = x.mean(dim=(2, 3))  # global average pooling (Eq. 4)
        v = torch.sigmoid(self.fc2(F.relu(self.fc1(v))))  # Eq. 5
        return x * v[:, :, None, None]  # EX(V2; F_f) broadcast (Eq. 6)


@MODELS.register_module()
class MSFEM(BaseModule):
    """Multi-scale feature enhancement module on a C-channel map; the output has the input's shape.

    Args:
        channels: C, the input and output channels (a multiple of ``norm_groups``).
        branches: B, the number of scales (F_0..F_{B-1}); 1, 2 or 4.
        variant: ``'paper'`` (Eqs. 1-7) or ``'code'`` (the authors' public SIM/RCA module).
        norm_groups: GroupNorm groups after each stride-2 conv (and in the code's attention).
        reduction: channel-attention bottleneck, C -> C/reduction -> C.
    """

    def __init__(self, channels: int, branches: int = 4, variant: str = "paper", norm_groups: int = 32,
                 reduction: int = 4, init_cfg: dict | list[dict] | None = XAVIER) -> None:
        super().__init__(init_cfg=init_cfg)
        check_msfem_args(channels, branches, variant, norm_groups, reduction)
        self.channels = channels
        self.branches = branches
        self.variant = variant
        if variant == "paper":
            self._build_paper(norm_groups, reduction)
        elif branches >= 3:
            self._build_code(norm_groups, reduction)
        # else: the code's module is the identity (see forward). Its 1.x version still builds a reduce conv, an
        # attention and (B=2) one stride-2 conv that forward never reaches; they are left out here, so the count
        # differs from theirs but DDP does not meet parameters without gradients.

    def _build_paper(self, groups: int, reduction: int) -> None:
        c, b = self.channels, self.branches
        # branch i: its own chain of i stride-2 convs (C2^i). A reading of Eq. 1: the code cascades its
        # branches instead, and "an iterated function" may also mean one chain whose i-th output is F_i
        # (fewer convs: 3 for 4 branches, not 6). No bias before GN, which removes it anyway
        self.branch_convs = nn.ModuleList(
            nn.Sequential(*(_down(c, c, groups, bias=False) for _ in range(i))) for i in range(1, b))
        self.fuse = nn.Conv2d(b * c, c, 1)  # Eq. 3 (C -> C when B = 1: F_F = F_0)
        self.attention = ChannelGate(c, reduction)
        self.out_conv = nn.Conv2d(c, c, 3, padding=1)  # C1 of Eq. 7: plain, like the FPN output conv it follows

    def _build_code(self, groups: int, reduction: int) -> None:
        c, b = self.channels, self.branches
        # In running order, deepest first: B-1 stride-2 convs on x; then each shallower branch of depth d
        # (B-2 .. 1) convolves cat(previous branch upsampled, x), 2C -> C, then d-1 more convs C -> C.
        # The code's stride-2 convs keep PyTorch's default bias before GN; kept for an exact parameter count.
        cascade = [nn.Sequential(*(_down(c, c, groups, bias=True) for _ in range(b - 1)))]
        for depth in range(b - 2, 0, -1):
            cascade.append(nn.Sequential(_down(2 * c, c, groups, bias=True),
                                         *(_down(c, c, groups, bias=True) for _ in range(depth - 1))))
        self.cascade = nn.ModuleList(cascade)
        # the config passes norm_cfg=None, activation=None to `reduce`: a plain 1x1 conv with bias
        self.reduce = nn.Conv2d(b * c, c, 1)
        # "RCA": the channel gate, then ReLU(y + GN(conv3x3(y))) with a bias-free conv
        self.attention = ChannelGate(c, reduction)
        self.refine = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.GroupNorm(groups, c))

    def forward(self, x: Tensor) -> Tensor:
        if self.variant == "paper":
            return self._forward_paper(x)
        if self.branches < 3:
            # The authors' SIM.forward starts with `if self.branch < 3: return x`: their MFPN then outputs the
            # bare FPN laterals for B = 1 and B = 2 alike, which is why the public code cannot produce Table 2's
            # CoMask_1 vs CoMask_2 difference. Reproduced as is.
            return x
        return self._forward_code(x)

    def _forward_paper(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        feats = [x] + [_upsample(branch(x), size) for branch in self.branch_convs]  # Eqs. 1-2
        fused = self.fuse(torch.cat(feats, dim=1) if len(feats) > 1 else x)
        return self.out_conv(self.attention(fused))

    def _forward_code(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        prev = _upsample(self.cascade[0](x), size)
        feats = [x, prev]
        for branch in self.cascade[1:]:
            # the code concatenates the previous branch first, then x
            prev = _upsample(branch(torch.cat([prev, x], dim=1)), size)
            feats.append(prev)
        # concatenation order of the code: x, deepest, ..., shallowest (it fixes which `reduce` weights see what)
        y = self.attention(self.reduce(torch.cat(feats, dim=1)))
        return F.relu(y + self.refine(y))
