"""The steps the model tests share: a generated config's model, two images through the config's own
pipeline, one training step, one prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sbrrepro.configs import Scale, build_config, build_model
from sbrrepro.plan import load_plan

PLANS = Path(__file__).resolve().parents[1] / "plans"


def generated(table: str, number: int, scale: Scale) -> dict:
    """The config sbrrepro generates for a row of one of the paper's plans."""
    row = next(r for r in load_plan(PLANS / f"{table}.yaml").rows if r.number == number)
    return build_config(row, scale)


def build(cfg: dict):
    """The config's model with its own initialisation, seeded."""
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights()
    return model


def batch(cfg: dict, model, split: str) -> dict:
    """Two images through the config's own pipeline and the model's data preprocessor."""
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    ds = DATASETS.build(cfg[f"{split}_dataloader"]["dataset"])
    return model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), training=split == "train")


def train_step(cfg: dict, model) -> dict:
    """One SGD step; returns the losses. Checks the loss is finite and every part of the detector
    learnt (not every tensor: zero-initialised residual BNs and context / non-local output layers
    keep the layers before them from a gradient at the first step)."""
    np.random.seed(0)  # the pipeline's random flips
    model.train()
    losses = model(**batch(cfg, model, "train"), mode="loss")
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total), losses
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    total.backward()
    optimizer.step()
    moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert moved == {n.split(".")[0] for n in before}, f"only {sorted(moved)} learnt"
    return losses


def predict(cfg: dict, model) -> list:
    """A prediction for two images: at most 100 detections each, with a full-size mask per box when
    the config evaluates segmentation."""
    masks = "segm" in cfg["val_evaluator"]["metric"]
    model.eval()
    with torch.no_grad():
        results = model(**batch(cfg, model, "val"), mode="predict")
    assert len(results) == 2
    for r in results:
        inst = r.pred_instances
        assert len(inst.bboxes) == len(inst.scores) == len(inst.labels) <= 100
        if masks:
            assert len(inst.masks) == len(inst.bboxes)
            assert tuple(inst.masks.shape[1:]) == tuple(r.ori_shape)
    return results
