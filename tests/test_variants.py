"""Every model variant the SBR-CNN plans train (each distinct model and options of every row),
generated at smoke scale: it builds, takes one training step with finite losses that reach its
weights, and predicts on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO
from test_models import _batch, _build

from sbrrepro.configs import build_config, smoke_scale
from sbrrepro.dataset import SyntheticSpec, ensure_dataset
from sbrrepro.plan import load_plan
from sbrrepro.zoo import MODELS

pytest.importorskip("mmcv._ext")


def _variants() -> dict[str, object]:
    out = {}
    for path in sorted((REPO / "plans").glob("*.yaml")):
        plan = load_plan(path)
        for row in plan.rows:
            if MODELS[row.model].trains:
                out.setdefault(f"{row.model}:{json.dumps(row.options, sort_keys=True)}", (plan.name, row))
    return out


VARIANTS = _variants()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = ensure_dataset(tmp_path_factory.mktemp("data"), SyntheticSpec(train_images=4, val_images=2))
    return smoke_scale(root)


def test_the_plans_cover_every_model_family():
    assert {row.model for _, row in VARIANTS.values()} == {m for m, s in MODELS.items() if s.trains}


@pytest.mark.parametrize("variant", list(VARIANTS), ids=[f"{p}-row{r.number}" for p, r in VARIANTS.values()])
def test_variant_trains_and_predicts_on_cpu(variant, smoke):
    _, row = VARIANTS[variant]
    cfg = build_config(row, smoke)
    torch.manual_seed(0)
    np.random.seed(0)
    model = _build(cfg)
    model.init_weights()
    model.train()
    losses = model(**_batch(cfg, model, "train"), mode="loss")
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total), losses
    total.backward()
    # every part of the detector learns (not every weight: zero-initialised residual branches and
    # context blocks get their first gradient only after a step)
    for part in ("backbone", "neck", "rpn_head", "roi_head", "bbox_head", "mask_head"):
        if hasattr(model, part) and getattr(model, part) is not None:
            grads = [p.grad for p in getattr(model, part).parameters() if p.grad is not None]
            assert any(bool(g.abs().sum() > 0) for g in grads), f"no gradient reaches {part}"
    if row.options.get("mask_iou", "none") != "none":
        assert "loss_mask_iou" in losses

    model.eval()
    with torch.no_grad():
        results = model(**_batch(cfg, model, "val"), mode="predict")
    assert len(results) == 2
    for r in results:
        inst = r.pred_instances
        assert len(inst.bboxes) == len(inst.scores) <= 100
        if "masks" in inst:
            assert len(inst.masks) == len(inst.bboxes) and inst.masks.shape[1:] == r.ori_shape
