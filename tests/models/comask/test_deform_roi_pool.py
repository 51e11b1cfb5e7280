"""mmcv's deformable RoI pooling with a CPU path (sbrrepro/models/comask/deform_roi_pool.py) against mmcv's
definition: RoIAlign with zero offsets, a slow loop written from the kernel otherwise, mmcv's own kernel
where CUDA is present; and D2Det's discriminative RoI pooling built on it (discriminative_pool.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("mmdet")

from mmcv.ops import DeformRoIPoolPack, RoIAlign  # noqa: E402

from sbrrepro.models.comask import DeformRoIPoolCPU, DeformRoIPoolPackCPU, DiscriminativeRoIPool  # noqa: E402
from sbrrepro.models.comask.deform_roi_pool import deform_roi_pool, deform_roi_pool_torch  # noqa: E402

# RoIs of a 10x12 map at scale 1/4: inside, across the border, past the border, tiny, inverted
ROIS = torch.tensor([[0, 1.0, 2.0, 30.0, 25.0], [1, -5.0, -3.0, 20.0, 44.0], [0, 40.0, 30.0, 47.0, 39.0],
                     [1, 3.0, 3.0, 3.5, 4.0], [0, -9.0, -9.0, 60.0, 70.0], [1, 30.0, 20.0, 10.0, 12.0]])


def _feature_map(dtype=torch.float32) -> torch.Tensor:
    return torch.randn(2, 3, 10, 12, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _point(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """mmcv's bilinear_interpolate, scalar by scalar."""
    height, width = img.shape[1:]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(img.shape[0], dtype=img.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    return ((1 - ly) * (1 - lx) * img[:, y_low, x_low] + (1 - ly) * lx * img[:, y_low, x_high]
            + ly * (1 - lx) * img[:, y_high, x_low] + ly * lx * img[:, y_high, x_high])


def _reference(input, rois, offset, size, scale, sampling_ratio, gamma) -> torch.Tensor:
    """deform_roi_pool_forward_cuda_kernel, one output bin at a time."""
    ph, pw = size
    out = torch.zeros(len(rois), input.shape[1], ph, pw, dtype=input.dtype)
    for k, roi in enumerate(rois.tolist()):
        img = input[int(roi[0])]
        x1, y1, x2, y2 = (v * scale - 0.5 for v in roi[1:])
        roi_w, roi_h = x2 - x1, y2 - y1
        bin_w, bin_h = roi_w / pw, roi_h / ph
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / ph)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pw)
        for i in range(ph):
            for j in range(pw):
                start_w, start_h = x1, y1
                if offset is not None:
                    start_w += gamma * roi_w * float(offset[k, 0, i, j])
                    start_h += gamma * roi_h * float(offset[k, 1, i, j])
                total = torch.zeros(input.shape[1], dtype=input.dtype)
                for iy in range(grid_h):
                    y = start_h + i * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        total += _point(img, y, start_w + j * bin_w + (ix + 0.5) * bin_w / grid_w)
                out[k, :, i, j] = total / max(grid_h * grid_w, 1)
    return out


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
def test_zero_offsets_are_aligned_roi_align(sampling_ratio):
    """mmcv's deform_roi_pool shifts RoIs by -0.5 and does not clamp their size: with zero (or no)
    offsets it is RoIAlign(aligned=True), not the aligned=False convention."""
    x, rois = _feature_map(), ROIS[:5]  # RoIAlign rejects the inverted RoI
    expected = RoIAlign((3, 4), spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=True)(x, rois)
    ours = deform_roi_pool_torch(x, rois, None, (3, 4), 0.25, sampling_ratio, 0.1)
    torch.testing.assert_close(ours, expected)
    zeros = torch.zeros(len(rois), 2, 3, 4)
    torch.testing.assert_close(deform_roi_pool_torch(x, rois, zeros, (3, 4), 0.25, sampling_ratio, 0.1), expected)
    legacy = RoIAlign((3, 4), spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=False)(x, rois)
    assert not torch.allclose(ours, legacy, atol=1e-3)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_offsets_match_the_kernel_definition(sampling_ratio):
    x = _feature_map(torch.float64)
    offset = torch.randn(len(ROIS), 2, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    expected = _reference(x, ROIS, offset, (3, 4), 0.25, sampling_ratio, 0.1)
    ours = deform_roi_pool_torch(x, ROIS.double(), offset, (3, 4), 0.25, sampling_ratio, 0.1)
    torch.testing.assert_close(ours, expected)
    assert expected.abs().sum() > 0 and not torch.allclose(ours, deform_roi_pool_torch(x, ROIS.double(), None, (3, 4),
                                                                                       0.25, sampling_ratio, 0.1))


def test_gradients_are_exact():
    """Autograd's gradient in input and offsets (away from the bilinear kinks) is the true one."""
    x = _feature_map(torch.float64)[:, :2, :6, :7].requires_grad_()
    rois = torch.tensor([[0, 2.0, 3.0, 17.0, 21.0], [1, 5.0, 1.0, 26.0, 13.0]], dtype=torch.float64)
    offset = (torch.randn(2, 2, 2, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
              * 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda i, o: deform_roi_pool_torch(i, rois, o, (2, 3), 0.25, 2, 0.1), (x, offset))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mmcv's deform_roi_pool kernel needs CUDA")
def test_cuda_matches_mmcv_kernel():
    """Forward and input gradient equal mmcv's kernel (its offset gradient differs in the border bands)."""
    x = _feature_map().cuda().requires_grad_()
    rois, offset = ROIS.cuda(), torch.randn(len(ROIS), 2, 3, 4, device="cuda")
    ours = deform_roi_pool(x, rois, offset, (3, 4), 0.25, 2, 0.1, impl="torch")
    theirs = deform_roi_pool(x, rois, offset, (3, 4), 0.25, 2, 0.1, impl="mmcv")
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn_like(ours)
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    (g_theirs,) = torch.autograd.grad(theirs, x, grad)
    torch.testing.assert_close(g_ours, g_theirs)


def test_pack_modules_run_on_cpu():
    """DeformRoIPoolCPU / DeformRoIPoolPackCPU are mmcv's modules (same parameters) with a CPU path."""
    x = _feature_map()
    pack = DeformRoIPoolPackCPU((3, 4), output_channels=3, deform_fc_channels=16, spatial_scale=0.25)
    assert pack.state_dict().keys() == DeformRoIPoolPack((3, 4), 3, 16, 0.25).state_dict().keys()
    plain = DeformRoIPoolCPU((3, 4), spatial_scale=0.25)
    torch.testing.assert_close(pack(x, ROIS), plain(x, ROIS))  # mmcv zero-initialises the last offset FC
    torch.nn.init.normal_(pack.offset_fc[-1].weight)
    moved = pack(x, ROIS)
    assert moved.shape == (len(ROIS), 3, 3, 4) and not torch.allclose(moved, plain(x, ROIS))


@pytest.mark.parametrize("weighting", ["awp", "sa"])
def test_discriminative_pool(weighting):
    """At init (zero offsets, zero weight conv): the 14x14 deformable pooling (= RoIAlign) then a plain 3/2/1
    average pooling, over the valid window for 'awp' (its weights cancel), times 0.5 for 'sa'."""
    x = torch.randn(2, 32, 10, 12, generator=torch.Generator().manual_seed(3))
    drp = DiscriminativeRoIPool(7, output_channels=32, spatial_scale=0.25, deform_fc_channels=16,
                                weighting=weighting)
    out = drp(x, ROIS[:5])
    assert out.shape == (5, 32, 7, 7)
    fine = RoIAlign(14, spatial_scale=0.25, sampling_ratio=1, aligned=True)(x, ROIS[:5])
    expected = (F.avg_pool2d(fine, 3, 2, 1, count_include_pad=False) if weighting == "awp"
                else 0.5 * F.avg_pool2d(fine, 3, 2, 1))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert drp(x, ROIS[:0]).shape == (0, 32, 7, 7)
    with pytest.raises(ValueError, match="weighting"):
        DiscriminativeRoIPool(7, output_channels=32, weighting="max")
