"""The IoU recorder: its device-held counts are numpy's histograms of the clipped IoUs, the sampler
records through it without a host copy, and its hook writes the histograms file as before."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from mmdet.structures.bbox import bbox_overlaps
from mmengine.hooks import LoggerHook
from mmengine.structures import InstanceData

import sbrrepro.models  # noqa: F401  (registers the plugins)
from sbrrepro.layout import RunPaths
from sbrrepro.models.common import IoUHistogramHook, IoURecordingSampler, iou_recorder
from sbrrepro.models.common.iou_recorder import BIN_EDGES, flush, record
from sbrrepro.results import read_histograms


@pytest.fixture(autouse=True)
def empty_recorder():
    iou_recorder._counts.clear()
    iou_recorder._epoch_counts.clear()
    yield
    iou_recorder._counts.clear()
    iou_recorder._epoch_counts.clear()


def _numpy_histogram(population: str, ious: np.ndarray) -> np.ndarray:
    """The histogram as the recorder counted it before its counts stayed on the device."""
    edges = BIN_EDGES[population]
    return np.histogram(np.clip(ious, edges[0], edges[-1]), bins=edges)[0]


def _random_ious(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(0, 40))
    edges = np.concatenate(list(BIN_EDGES.values()))
    special = np.array([-0.3, -1e-9, 0.0, 1.0, 1 + 1e-9, 1.7, np.inf, -np.inf, np.nan])
    pool = np.concatenate([rng.uniform(-0.2, 1.2, n), rng.choice(edges, n), rng.choice(special, n // 4)])
    ious = rng.choice(pool, size=int(rng.integers(0, len(pool) + 1)), replace=False)
    return ious.astype(rng.choice([np.float32, np.float64]))


def test_device_counts_are_numpys_histograms_of_the_clipped_ious():
    rng = np.random.default_rng(0)
    expected: dict[tuple[str, str], np.ndarray] = {}
    for trial in range(300):
        population, series = str(rng.choice(list(BIN_EDGES))), str(rng.choice(["loop1", "loop2"]))
        ious = _random_ious(rng)
        if trial % 4 == 0:
            ious = ious[:0]  # empty
        # a tensor as the sampler passes; numpy is accepted too
        record(population, series, ious if trial % 5 == 0 else torch.from_numpy(ious))
        key = population, series
        expected[key] = expected.get(key, 0) + _numpy_histogram(population, ious)
        if trial % 50 == 49:
            flush()
    flush()
    assert sorted(iou_recorder._epoch_counts) == sorted(expected)
    for key, counts in expected.items():
        np.testing.assert_array_equal(iou_recorder._epoch_counts[key], counts, err_msg=str(key))
        assert iou_recorder._epoch_counts[key].dtype == np.int64


def test_float32_ious_are_binned_against_the_float64_edges():
    """float32(0.7) < 0.7: numpy bins it below the edge 0.7, and float64 0.7 above it."""
    values = [0.5, 0.55, 0.7, 1.0, 1.2, 0.4]  # 0.4 clipped to 0.5, 1.2 to 1
    record("positives", "loop1", torch.tensor(values, dtype=torch.float32))
    record("positives", "loop1", torch.tensor(values, dtype=torch.float64))
    flush()
    np.testing.assert_array_equal(iou_recorder._epoch_counts["positives", "loop1"], [4, 2, 0, 1, 1, 0, 0, 0, 0, 4])


def _sampler() -> IoURecordingSampler:
    from mmdet.utils import register_all_modules

    register_all_modules()
    return IoURecordingSampler("loop1", dict(type="RandomSampler", num=16, pos_fraction=0.5, neg_pos_ub=-1,
                                             add_gt_as_proposals=True))


def _assign():
    """One ground truth [0, 0, 100, 100] and proposals of IoU 1, 0.7, 0.55, 0.5, 0.3 and 0 with it
    (in float32: 0.7 just below its edge, 0.3 and 0.55 just above theirs)."""
    from mmdet.models.task_modules import MaxIoUAssigner

    gt = InstanceData(bboxes=torch.tensor([[0.0, 0.0, 100.0, 100.0]]), labels=torch.tensor([0]))
    widths = [100.0, 70.0, 55.0, 50.0, 30.0]
    boxes = torch.tensor([[0.0, 0.0, w, 100.0] for w in widths] + [[200.0, 200.0, 250.0, 250.0]])
    pred = InstanceData(priors=boxes)
    assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=False)
    return assigner.assign(pred, gt), pred, gt


def test_sampler_records_the_proposals_and_positives_as_before(monkeypatch):
    def no_host_copy(*args, **kwargs):
        raise AssertionError("the IoUs were copied to the host at a sampling")

    assign_result, pred, gt = _assign()
    before = _numpy_histogram("proposals", assign_result.max_overlaps.float().numpy())  # as it was recorded
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "cpu", no_host_copy)
        m.setattr(torch.Tensor, "numpy", no_host_copy)
        result = _sampler().sample(assign_result, pred, gt)
    # the counts are still tensors on the IoUs' device, until the hook flushes them
    assert all(isinstance(c, torch.Tensor) and c.device == pred.priors.device and c.dtype == torch.int64
               for c in iou_recorder._counts.values())
    assert not iou_recorder._epoch_counts

    keep = result.pos_is_gt == 0  # the ground truth the sampler added as a proposal is left out
    positives = bbox_overlaps(result.pos_priors[keep].float(), result.pos_gt_bboxes[keep].float(), is_aligned=True)
    flush()
    counts = iou_recorder._epoch_counts
    np.testing.assert_array_equal(counts["proposals", "loop1"], before)
    np.testing.assert_array_equal(counts["positives", "loop1"], _numpy_histogram("positives", positives.numpy()))
    np.testing.assert_array_equal(np.flatnonzero(counts["proposals", "loop1"]), [0, 6, 10, 11, 13, 19])
    np.testing.assert_array_equal(counts["positives", "loop1"], [1, 1, 0, 1, 0, 0, 0, 0, 0, 1])


def test_sampler_without_positives_to_record_keeps_an_empty_series():
    assign_result, pred, gt = _assign()
    _sampler().sample(assign_result, pred, gt, record_iou=False)
    assert sorted(iou_recorder._counts) == [("proposals", "loop1")]


def _old_file(epochs: dict[str, dict[tuple[str, str], np.ndarray]]) -> str:
    """The histograms file as the hook wrote it when its counts were numpy histograms."""
    data = {population: {"bin_edges": edges.tolist(),
                         "epochs": {epoch: {s: c.tolist() for (p, s), c in sorted(counts.items()) if p == population}
                                    for epoch, counts in epochs.items()}}
            for population, edges in BIN_EDGES.items()}
    return json.dumps(data, indent=1)


def test_hook_flushes_each_logging_interval_and_writes_the_histograms_file(tmp_path):
    rng = np.random.default_rng(1)
    runner = types.SimpleNamespace(epoch=0, work_dir=str(tmp_path), hooks=[LoggerHook(interval=2)])
    hook = IoUHistogramHook()
    hook.before_train(runner)
    epochs: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    for epoch in range(2):
        runner.epoch = epoch
        hook.before_train_epoch(runner)
        if epoch == 1:  # a resumed epoch starts from zero: what the interrupted one counted is dropped
            record("positives", "loop1", torch.tensor([0.9]))
            hook.after_train_iter(runner, 1)
            hook.before_train_epoch(runner)
        expected: dict[tuple[str, str], np.ndarray] = {}
        for batch_idx in range(5):
            for population, series in [("proposals", "loop1"), ("positives", "loop1"), ("positives", "loop2")]:
                ious = _random_ious(rng)
                record(population, series, torch.from_numpy(ious))
                expected[population, series] = expected.get((population, series), 0) + _numpy_histogram(
                    population, ious)
            hook.after_train_iter(runner, batch_idx)
            assert bool(iou_recorder._counts) == (batch_idx % 2 == 0), "flushed every 2nd iteration only"
        hook.after_train_epoch(runner)
        epochs[str(epoch + 1)] = expected

    path = RunPaths(tmp_path).histograms
    assert path.read_text() == _old_file(epochs)
    data = read_histograms(path)
    assert data["positives"]["epochs"]["2"]["loop2"] == epochs["2"]["positives", "loop2"].tolist()
