"""Every model variant the plans train (each distinct smoke-scale model of every row), and every
other model of the zoo on its default options, generated at smoke scale: it builds, takes one
training step with finite losses that reach its weights, and predicts on the CPU."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sbrrepro.configs import build_config, smoke_scale
from sbrrepro.dataset import SyntheticSpec
from sbrrepro.plan import load_plan
from sbrrepro.schema import validate
from sbrrepro.zoo import MODELS
from tests.helpers import TABLE3, build, plan_files, predict, train_step

pytest.importorskip("mmcv._ext")


def _variants() -> dict[str, object]:
    """One row per distinct smoke-scale model (rows whose options differ only in what the smoke scale
    shrinks alike, such as ResNet-50 and -101, build the same model)."""
    scale = smoke_scale(Path("/data") / SyntheticSpec().folder_name())  # configs only: nothing is read
    out = {}
    for path in plan_files():
        plan = load_plan(path)
        for row in plan.model_rows:
            if MODELS[row.model].trains:
                model = build_config(row, scale)["model"]
                out.setdefault(json.dumps(model, sort_keys=True, default=str), (plan.name, row))
    planned = {row.model for _, row in out.values()}
    recipe_row = load_plan(TABLE3).rows[0]
    for name, model in MODELS.items():  # in the zoo, in no plan yet: its defaults, on Table 3's recipe
        if model.trains and name not in planned:
            options = model.finish(validate({}, model.options, f"zoo model {name}"))
            out[f"{name}:defaults"] = ("zoo", dataclasses.replace(recipe_row, model=name, label=name, options=options))
    return out


VARIANTS = _variants()


@pytest.mark.parametrize("variant", list(VARIANTS), ids=[f"{p}-row{r.number}" for p, r in VARIANTS.values()])
@pytest.mark.training
def test_variant_trains_and_predicts_on_cpu(variant, smoke):
    _, row = VARIANTS[variant]
    cfg = build_config(row, smoke)
    model = build(cfg)
    losses = train_step(cfg, model)
    if row.options.get("mask_iou", "none") != "none":
        assert "loss_mask_iou" in losses
    predict(cfg, model)
