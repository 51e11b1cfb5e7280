"""Every model variant the SBR-CNN plans train (each distinct model and options of every row),
generated at smoke scale: it builds, takes one training step with finite losses that reach its
weights, and predicts on the CPU."""

from __future__ import annotations

import json

import pytest
from steps import build, plan_files, predict, train_step

from sbrrepro.configs import build_config
from sbrrepro.plan import load_plan
from sbrrepro.zoo import MODELS

pytest.importorskip("mmcv._ext")


def _variants() -> dict[str, object]:
    out = {}
    for path in plan_files():
        plan = load_plan(path)
        for row in plan.rows:
            if MODELS[row.model].trains:
                out.setdefault(f"{row.model}:{json.dumps(row.options, sort_keys=True)}", (plan.name, row))
    return out


VARIANTS = _variants()


def test_the_plans_cover_every_model_family():
    assert {row.model for _, row in VARIANTS.values()} == {m for m, s in MODELS.items() if s.trains}


@pytest.mark.parametrize("variant", list(VARIANTS), ids=[f"{p}-row{r.number}" for p, r in VARIANTS.values()])
def test_variant_trains_and_predicts_on_cpu(variant, smoke):
    _, row = VARIANTS[variant]
    cfg = build_config(row, smoke)
    model = build(cfg)
    losses = train_step(cfg, model)
    if row.options.get("mask_iou", "none") != "none":
        assert "loss_mask_iou" in losses
    predict(cfg, model)
