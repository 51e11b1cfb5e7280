"""CoMask's MSFEM and MFPN neck (Sec. 3.1, Eqs. 1-7; 'paper' and the authors' 'code' variants) on small
ResNet-18-like features: shapes against MMDetection's FPN, the exact parameter cost of a branch, the code's
identity for B < 3, gradients, small maps, argument checks and building from the registry."""

from __future__ import annotations

import pytest
import torch
from mmdet.models.necks import FPN

from sbrrepro.models.comask import MFPN, MSFEM

IN_CHANNELS = [64, 128, 256, 512]
C = 64  # a multiple of GroupNorm's 32 groups
NUM_OUTS = 5


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def feats() -> tuple[torch.Tensor, ...]:
    """C2-C5 of a 128x128 image (strides 4..32)."""
    torch.manual_seed(0)
    return tuple(torch.randn(1, c, 128 // s, 128 // s) for c, s in zip(IN_CHANNELS, (4, 8, 16, 32)))


def neck(**kw) -> MFPN:
    torch.manual_seed(0)
    return MFPN(IN_CHANNELS, C, NUM_OUTS, **kw)


@pytest.mark.parametrize("variant", ["paper", "code"])
@pytest.mark.parametrize("branches", [1, 2, 4])
def test_output_shapes_equal_fpn(feats, variant: str, branches: int) -> None:
    ref = [o.shape for o in FPN(IN_CHANNELS, C, NUM_OUTS)(feats)]
    with torch.no_grad():
        outs = neck(branches=branches, variant=variant)(feats)
    assert [o.shape for o in outs] == ref
    assert all(torch.isfinite(o).all() for o in outs)


def test_paper_branch_cost_is_exact() -> None:
    # B=2 adds, per level, one 3x3 stride-2 conv (no bias: GN follows), its GN (weight + bias) and C more
    # input channels on the 1x1 fuse conv
    per_level = 3 * 3 * C * C + 2 * C + (2 * C - C) * 1 * 1 * C
    one, two = neck(branches=1), neck(branches=2)
    assert len(one.msfems) == len(two.msfems) == NUM_OUTS  # P2-P6, one module each
    assert n_params(two) - n_params(one) == NUM_OUTS * per_level
    # and B=1 is the fuse conv, the attention FCs and the output conv over a plain FPN
    msfem = (C * C + C) + 2 * C * (C // 4) + (9 * C * C + C)
    assert n_params(one) - n_params(FPN(IN_CHANNELS, C, NUM_OUTS)) == NUM_OUTS * msfem


def test_paper_b1_differs_from_b2() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, C, 32, 32)
    one, two = MSFEM(C, branches=1), MSFEM(C, branches=2)
    assert len(one.branch_convs) == 0 and len(two.branch_convs) == 1  # B=1 is F_0 alone
    assert one(x).shape == two(x).shape == x.shape
    assert not torch.allclose(one(x), two(x))


@pytest.mark.parametrize("branches", [1, 2])
def test_code_below_three_branches_is_identity(feats, branches: int) -> None:
    m = neck(branches=branches, variant="code")
    assert n_params(m) == sum(n_params(c) for c in m.lateral_convs)  # the output convs are gone
    x = torch.randn(1, C, 8, 8)
    assert MSFEM(C, branches=branches, variant="code")(x) is x
    with torch.no_grad():
        outs = m(feats)
        # the FPN's laterals after its top-down pathway, which the output convs would have convolved
        lat = [conv(f) for conv, f in zip(m.lateral_convs, feats)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + torch.nn.functional.interpolate(lat[i], size=lat[i - 1].shape[-2:])
    for out, ref in zip(outs, lat):
        assert torch.equal(out, ref)
    assert torch.equal(outs[4], torch.nn.functional.max_pool2d(lat[3], 1, stride=2))  # P6 from the new P5


def test_code_four_branches_structure(feats) -> None:
    m = neck(branches=4, variant="code")
    assert not hasattr(m, "msfems") and all(isinstance(m.fpn_convs[i], MSFEM) for i in range(4))  # P2-P5 only
    sim = m.fpn_convs[0]
    # deepest first: 3 convs on x; then depth 2 and 1, each starting from cat(previous, x) = 2C channels
    assert [len(b) for b in sim.cascade] == [3, 2, 1]
    assert [b[0][0].in_channels for b in sim.cascade] == [C, 2 * C, 2 * C]
    assert sim.reduce.in_channels == 4 * C
    down = 9 * C * C + C + 2 * C  # conv with bias + GN
    per_level = (6 * down + 2 * 9 * C * C) + (4 * C * C + C) + 2 * C * (C // 4) + (9 * C * C + 2 * C)
    assert n_params(m) - n_params(neck(branches=1, variant="code")) == 4 * per_level
    with torch.no_grad():
        assert torch.all(m(feats)[0] >= 0)  # RCA ends in ReLU


def test_paper_gradients_reach_every_parameter(feats) -> None:
    m = neck(branches=4)
    sum(o.square().mean() for o in m(feats)).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("variant", ["paper", "code"])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_small_maps(variant: str, size: int) -> None:
    x = torch.randn(2, C, size, size)
    assert MSFEM(C, branches=4, variant=variant)(x).shape == x.shape


@pytest.mark.parametrize(("kw", "match"), [
    (dict(variant="both"), "variant"), (dict(branches=3), "branches"), (dict(branches=0), "branches"),
    (dict(norm_groups=48), "multiple of norm_groups"), (dict(norm_groups=0), "norm_groups"),
])
def test_bad_arguments(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MFPN(IN_CHANNELS, C, NUM_OUTS, **kw)


def test_build_from_registry(feats) -> None:
    from mmdet.registry import MODELS

    import sbrrepro.models  # noqa: F401  (registers MSFEM and MFPN)

    m = MODELS.build(dict(type="MFPN", in_channels=IN_CHANNELS, out_channels=C, num_outs=NUM_OUTS, branches=2,
                          variant="paper", norm_groups=32))
    assert isinstance(m, MFPN) and m.branches == 2
    m.init_weights()
    assert isinstance(MODELS.build(dict(type="MSFEM", channels=C, variant="code")), MSFEM)
