"""The steps the tests share: the paper's plans and a modified copy of one; and for the model tests, a
generated config's model, two images through the config's own pipeline, one training step, one
prediction.

Light to import (torch and the configs are imported by the steps that use them): benchmarks/ import
`copy_plan` from here too."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from sbrrepro.configs import Scale

PLANS = Path(__file__).resolve().parents[1] / "plans"
RECIPE = "recipe.yaml"  # each paper's shared recipe, beside its plans: plans/<paper>/recipe.yaml
DELETE = object()  # a `copy_plan` change that removes the field


def plan_files() -> list[Path]:
    """Every plan of every paper: plans/<paper>/*.yaml, not the papers' recipes."""
    return sorted(p for p in PLANS.glob("*/*.yaml") if p.name != RECIPE)


def copy_plan(tmp_path: Path, plan: str, rows: list[int] | None = None, *,
              name: str | None = None, text: str | None = None, **changes: Any) -> Path:
    """A modified copy of plans/<plan>.yaml, written to tmp_path/plans/<paper>/<name>.yaml (default: the
    plan's own name) beside a copy of the recipe file it names; `published` (where it has one) points
    at the CSV in the repository's tables/ (an absolute path). Only the paper's `rows` (row numbers, in
    that order) when given; then each change: a top-level field (`recipe={...}` changes the recipe file's values, as a
    plan's `recipe` does), or a dotted path into the plan as it is then (`**{"rows.1.options": {...}}`,
    indices into the selected rows); `DELETE` removes the field. With `text`, that text is written
    instead of the plan (malformed YAML). Returns the path of the copy."""
    source = PLANS / f"{plan}.yaml"
    data = yaml.safe_load(source.read_text())
    folder = tmp_path / "plans" / source.parent.name
    folder.mkdir(parents=True, exist_ok=True)
    if data.get("recipe_file"):
        shutil.copyfile(source.parent / data["recipe_file"], folder / data["recipe_file"])
    if data.get("published"):
        data["published"] = str((source.parent / data["published"]).resolve())
    if rows is not None:
        by_number = {r["row"]: r for r in data["rows"]}
        data["rows"] = [by_number[n] for n in rows]
    for field, value in changes.items():
        *parents, last = field.split(".")
        node = data
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        key = int(last) if last.isdigit() else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    path = folder / f"{name or source.stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False) if text is None else text)
    return path


def generated(table: str, number: int, scale: Scale) -> dict:
    """The config sbrrepro generates for a row of one of the paper's plans (e.g. 'sbr-cnn/table3')."""
    from sbrrepro.configs import build_config
    from sbrrepro.plan import load_plan

    row = next(r for r in load_plan(PLANS / f"{table}.yaml").rows if r.number == number)
    return build_config(row, scale)


def build(cfg: dict):
    """The config's model with its own initialisation, seeded."""
    import torch

    from sbrrepro.configs import build_model

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
    import numpy as np
    import torch

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


def backward(model, inputs: dict) -> tuple[dict, dict]:
    """One forward-backward pass of a detector in training mode on preprocessed `inputs`: its losses
    (checked finite) and its trainable parameters by name (checked: every one has a gradient, as
    DDP without unused parameters needs)."""
    import torch

    model.train()
    losses = model(**inputs, mode="loss")
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total), losses
    total.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n, p in trainable.items() if p.grad is None]
    assert not missing, f"no gradient: {missing}"
    return losses, trainable


def predict(cfg: dict, model) -> list:
    """A prediction for two images: at most 100 detections each, with a full-size mask per box when
    the config evaluates segmentation."""
    import torch

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
