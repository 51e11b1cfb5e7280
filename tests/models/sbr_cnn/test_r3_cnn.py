"""R^3-CNN built from generated configs on the real stack: parameter counts at full scale, and at
smoke scale a training step and a prediction on the CPU, with the loop mechanics checked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sbrrepro.configs import build_config, build_model, full_scale
from sbrrepro.params import trainable
from sbrrepro.plan import load_plan
from tests.helpers import TABLE3, build, data, predict

pytest.importorskip("mmcv._ext")



@pytest.fixture(scope="module")
def plan():
    return load_plan(TABLE3)


@pytest.mark.training
def test_full_scale_trainable_parameters_match_sbr_cnn_table2(plan, tmp_path):
    """SBR-CNN Table 2: Mask R-CNN 44,170K, naive R^3-CNN 43,912K; loops add no weights (Table 3)."""
    scale = full_scale(tmp_path)
    counts = {row.number: trainable(build_model(build_config(row, scale))) for row in plan.rows}
    assert counts[1] == 44_170_992
    assert counts[2] == counts[3] == counts[4] == counts[5] == 43_912_884


@pytest.mark.parametrize("loops", [1, 3])
@pytest.mark.training
def test_r3_cnn_trains_and_predicts_on_cpu(plan, smoke, loops):
    from sbrrepro.models.common import iou_recorder

    row = dataclasses.replace(plan.rows[1], options={**plan.rows[3].options, "loops": loops, "eval_loops": loops,
                                                     "alternation": "a" * loops,
                                                     "iou_thresholds": [0.5, 0.6, 0.7][:loops],
                                                     "loss_weights": [1, 0.75, 0.5][:loops]})
    cfg = build_config(row, smoke)
    np.random.seed(0)  # the pipeline's random flips
    model = build(cfg)
    model.train()
    iou_recorder._counts.clear()

    losses = model(**data(cfg, model, True), mode="loss")
    assert {f"s{t}.loss_cls" for t in range(loops)} <= set(losses)
    assert {f"s{t}.loss_mask" for t in range(loops)} <= set(losses)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    before = [p.detach().clone() for p in model.roi_head.mask_head[0].parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    total.backward()
    optimizer.step()
    after = list(model.roi_head.mask_head[0].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "the mask head did not learn"
    # one IoU series per loop and population: the positives recorded once per loop (not again for
    # the mask's re-sampling), every proposal at the assigner, negatives included, at every sampling
    series = [f"loop{t + 1}" for t in range(loops)]
    assert sorted(iou_recorder._counts) == [(p, s) for p in ("positives", "proposals") for s in series]
    positives, proposals = iou_recorder._counts["positives", "loop1"], iou_recorder._counts["proposals", "loop1"]
    assert len(proposals) == 20 and proposals.sum() > positives.sum() > 0
    assert proposals[:10].sum() > 0, "negatives (IoU < 0.5) are counted too"

    predict(cfg, model)


def test_loops_average_scores_and_masks(plan, smoke):
    """At inference: raw class scores are the mean over the L_e loops of the head's scores on the
    RoIs regressed by the previous loop; masks are the mean of the chained mask loops' sigmoids."""
    from mmdet.structures.bbox import bbox2roi, get_box_tensor

    row = plan.rows[3]  # 3 loops, one head pair
    cfg = build_config(row, smoke)
    model = build(cfg)
    model.eval()
    head = model.roi_head
    x = tuple(torch.randn(1, smoke.width, s, s) for s in (32, 16, 8, 4, 2))
    boxes = torch.tensor([[10.0, 10.0, 60.0, 70.0], [30.0, 20.0, 100.0, 90.0]])
    meta = [{"img_shape": (128, 128)}]
    with torch.no_grad():
        rois, cls_scores, _ = head._refine_roi(x, bbox2roi([boxes]), meta, [2])
        expected, cur = [], bbox2roi([boxes])
        for loop in range(3):
            res = head._bbox_forward(0, x, cur)
            expected.append(res["cls_score"])
            if loop < 2:
                labels = res["cls_score"][:, :-1].argmax(1)
                refined = head.bbox_head[0].regress_by_class(cur[:, 1:], labels, res["bbox_pred"], meta[0])
                cur = torch.cat([cur[:, :1], get_box_tensor(refined)], 1)
        torch.testing.assert_close(cls_scores[0], sum(expected) / 3)
        torch.testing.assert_close(rois[0], cur)

        masks = head._looped_masks(x, cur)
        feats = head.mask_roi_extractor[0](x[:4], cur)
        feat, sig = None, []
        for _ in range(3):
            logits, feat = head.mask_head[0](feats, feat)
            sig.append(logits.sigmoid())
        torch.testing.assert_close(masks, sum(sig) / 3)
        assert not torch.allclose(sig[0], sig[1]), "the mask loop must feed its features back"


def test_histograms_written_before_populations_read_as_positives(tmp_path):
    """A work dir from before the proposals were recorded holds the positives alone."""
    import json

    from sbrrepro.layout import RunPaths
    from sbrrepro.results import load_histograms

    run = RunPaths(tmp_path)
    run.histograms.write_text(json.dumps({"bin_edges": [0.5, 0.75, 1.0], "epochs": {"1": {"rcnn": [1, 2]},
                                                                                    "2": {"rcnn": [3, 4]}}}))
    assert load_histograms(run, "positives") == ([0.5, 0.75, 1.0], {"rcnn": [4, 6]})
    assert load_histograms(run, "proposals") is None
