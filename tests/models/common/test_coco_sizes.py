"""The mask AP_S/M/L under both size conventions, on a crafted COCO example scored by pycocotools.

One 200x200 image, two ground truths (a 20x20 square: small; a 50x50 square: medium), each found by a
perfect mask, and a false positive scored highest: an L-shaped mask of 464 px (small) whose 60x60 box
is 3,600 px (medium). Sized by mask area (MMDetection 3.3), the false positive counts against AP_S
(0.5) and not AP_M (1.0); sized by box area (MMDetection up to 2.11), the other way round. AP is 2/3
either way.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import sbrrepro.models  # noqa: F401  (registers the plugins)
from sbrrepro.models.common import TwoConventionCocoMetric
from tests.helpers import write_coco

SIZE = 200


def _square(x: int, y: int, side: int) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[y:y + side, x:x + side] = 1
    return m


def _ell(x: int, y: int, side: int, thick: int) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[y:y + side, x:x + thick] = 1
    m[y + side - thick:y + side, x:x + side] = 1
    return m


@pytest.fixture
def crafted(tmp_path):
    gts = [(10, 10, 20), (60, 10, 50)]  # x, y, side: small (400 px), medium (2,500 px)
    path = write_coco(tmp_path / "instances.json", [{"id": 1, "width": SIZE, "height": SIZE, "file_name": "a.png"}],
                      [(1, [x, y, s, s], 0) for x, y, s in gts])
    ell = _ell(120, 120, 60, 4)
    assert ell.sum() < 32 ** 2 < 60 * 60 < 96 ** 2  # its mask is small, its box medium
    masks = [_square(*g) for g in gts] + [ell]
    result = {"img_id": 1, "labels": np.zeros(3, int), "scores": np.array([0.9, 0.8, 0.95]),
              "bboxes": np.array([[10, 10, 30, 30], [60, 10, 110, 60], [120, 120, 180, 180]], float),
              "masks": [mask_utils.encode(np.asfortranarray(m)) for m in masks]}
    return str(path), result


def _evaluate(ann_file: str, result: dict, **kwargs) -> dict[str, float]:
    metric = TwoConventionCocoMetric(ann_file=ann_file, metric=["bbox", "segm"], **kwargs)
    metric.dataset_meta = {"classes": ("thing",)}
    gt = {"width": SIZE, "height": SIZE, "img_id": 1}
    return metric.compute_metrics([(gt, {**result, "masks": [dict(m) for m in result["masks"]]})])


@pytest.mark.parametrize("by", ["box", "mask"])
def test_mask_sizes_under_both_conventions(crafted, by):
    out = _evaluate(*crafted, mask_sizes_by=by)
    assert out["segm_mAP"] == pytest.approx(0.667)  # AP does not depend on the convention
    assert (out["segm_mAP_s_maskarea"], out["segm_mAP_m_maskarea"]) == (0.5, 1.0)
    assert (out["segm_mAP_s_boxarea"], out["segm_mAP_m_boxarea"]) == (1.0, 0.5)
    assert (out["segm_mAP_s"], out["segm_mAP_m"]) == ((1.0, 0.5) if by == "box" else (0.5, 1.0))
    assert out["segm_mAP_l"] == out["segm_mAP_l_boxarea"] == out["segm_mAP_l_maskarea"] == -1  # no large object


def test_stock_coco_metric_sizes_by_mask(crafted):
    """MMDetection 3.3's own CocoMetric: the mask-area convention."""
    from mmdet.evaluation.metrics import CocoMetric

    metric = CocoMetric(ann_file=crafted[0], metric="segm")
    metric.dataset_meta = {"classes": ("thing",)}
    out = metric.compute_metrics([({"width": SIZE, "height": SIZE, "img_id": 1}, crafted[1])])
    assert (out["segm_mAP_s"], out["segm_mAP_m"]) == (0.5, 1.0)


def test_server_uploads_untouched(crafted, tmp_path):
    """format_only (test-dev uploads): the detections as CocoMetric writes them, boxes kept, no scores."""
    out = TwoConventionCocoMetric(ann_file=crafted[0], metric="segm", format_only=True,
                                  outfile_prefix=str(tmp_path / "det"), mask_sizes_by="box")
    out.dataset_meta = {"classes": ("thing",)}
    assert out.compute_metrics([({"width": SIZE, "height": SIZE, "img_id": 1}, crafted[1])]) == {}
    assert all("bbox" in d for d in json.loads((tmp_path / "det.segm.json").read_text()))


@pytest.mark.parametrize("plan, row, by", [("sbr-cnn/table11", 1, "box"), ("scnet/table5", 1, "box"),
                                           ("groie/table5", 8, "box"), ("comask/table2", 1, "box"),
                                           ("ms-subnet/table2", 1, "mask")])
def test_each_paper_is_evaluated_by_its_convention_outside_the_key(tmp_path, monkeypatch, plan, row, by):
    """The papers' MMDetection (1.x forks, SBR-CNN's 2.8) sized by box area; MS-Subnet's is unknown: 3.3's.
    The evaluator is set after the key is computed: the key is that of the config with CocoMetric."""
    from sbrrepro import configs
    from sbrrepro.plan import load_plan
    from tests.helpers import PLANS

    found = next(r for r in load_plan(PLANS / f"{plan}.yaml").model_rows if r.number == row)
    scale = configs.full_scale(tmp_path / "coco")
    key, cfg = configs.keyed_config(found, scale)
    for name in ("val_evaluator", "test_evaluator"):
        assert cfg[name]["type"] == "TwoConventionCocoMetric" and cfg[name]["mask_sizes_by"] == by
    monkeypatch.setattr(configs, "with_mask_sizes", lambda cfg, by: cfg)
    assert configs.keyed_config(found, scale)[0] == key


def test_server_rows_write_their_uploads_with_cocometric(tmp_path):
    from sbrrepro import configs
    from sbrrepro.plan import load_plan
    from tests.helpers import PLANS

    found = next(r for r in load_plan(PLANS / "scnet/table1.yaml").model_rows if r.number == 9)
    cfg = configs.build_config(found, configs.full_scale(tmp_path / "coco"))
    assert cfg["test_evaluator"]["type"] == "CocoMetric" and cfg["test_evaluator"]["format_only"]
