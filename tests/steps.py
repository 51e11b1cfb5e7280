"""The steps the tests share: the paper's plans and a modified copy of one; and for the model tests (the
plugins' tests in tests/models/<paper>/ and the plans' variants) a model, its inputs, one training step
and one prediction. A model comes from a config that is either generated (`generated`: the training's
whole config, its images through its own pipeline) or a bare model config (`shipped_model`: one of
MMDetection's shipped models, shrunk to run on a CPU, fed MMDetection's random demo images).

Light to import (torch, MMDetection and the configs are imported by the steps that use them):
benchmarks/ import `copy_plan` from here too."""

from __future__ import annotations

import copy
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


# ---- model tests: a model, its inputs, a training step, a prediction

IMAGE, CLASSES, SEMANTIC_CLASSES = 128, 3, 5  # the demo inputs of bare model configs, and their classes


def shipped_model(path: str, width: int = 32, fc: int = 128) -> dict:
    """The model of one of MMDetection's shipped configs (`path` below its configs/), shrunk to run in a
    second on a CPU: ResNet-18, `width` channels in place of 256 and `fc` in place of the 1024-wide FCs,
    CLASSES classes (SEMANTIC_CLASSES for COCO-stuff's 183), 200 RPN proposals kept of which 100 are
    used, 64 RoIs sampled per image."""
    import mmdet
    from mmengine.config import Config

    def shrink(node) -> None:
        if isinstance(node, list):
            for item in node:
                shrink(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in ("in_channels", "out_channels", "feat_channels", "conv_out_channels",
                           "out_conv_channels") and value == 256:
                    node[key] = width
                elif key in ("fc_out_channels", "in_channels") and value == 1024:  # box FCs; FeatureRelayHead's input
                    node[key] = fc
                elif key == "num_classes":
                    node[key] = {80: CLASSES, 183: SEMANTIC_CLASSES}[value]
                else:
                    shrink(value)

    model = Config.fromfile(str(Path(mmdet.__file__).parent / ".mim" / "configs" / path)).to_dict()["model"]
    shrink(model)
    model["backbone"].update(depth=18, init_cfg=None)
    model["neck"]["in_channels"] = [64, 128, 256, 512]
    train, test = model["train_cfg"], model["test_cfg"]
    train["rpn_proposal"].update(nms_pre=200, max_per_img=100)
    test["rpn"].update(nms_pre=200, max_per_img=100)
    for stage in train["rcnn"] if isinstance(train["rcnn"], list) else [train["rcnn"]]:
        stage["sampler"]["num"] = 64
    return model


def fpn_features(channels: int, image: int = IMAGE, strides: tuple[int, ...] = (4, 8, 16, 32)) -> list:
    """Random features of 2 images of `image` pixels, one map per stride, seeded."""
    import torch

    torch.manual_seed(1)
    return [torch.randn(2, channels, image // s, image // s) for s in strides]


def _generated(cfg: dict) -> bool:
    """Whether `cfg` is a whole generated config (else a bare model config)."""
    return "model" in cfg and "train_dataloader" in cfg


def build(cfg: dict, init: bool = True):
    """The config's model, seeded, after its own initialisation (`init_weights`, its per-parameter log
    silenced) unless `init` is False: a generated config's as the training builds it, a bare model config's
    from MMDetection's registry (with sbrrepro's plugins)."""
    import torch
    from mmengine.logging import MMLogger

    torch.manual_seed(0)
    if _generated(cfg):
        from sbrrepro.configs import build_model

        model = build_model(cfg)
    else:
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        from mmengine.config import ConfigDict

        import sbrrepro.models  # noqa: F401  (registers the plugins)

        register_all_modules()  # MMDetection's default scope, as a Runner sets it
        model = MODELS.build(ConfigDict(copy.deepcopy(cfg)))
    if init:
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel("WARNING")
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    return model


def data(cfg: dict, model, training: bool, num_items: list[int] | None = None) -> dict:
    """Two images, preprocessed by the model: a generated config's first two through its own pipeline (its
    train or val split); for a bare model config, MMDetection's demo inputs (IMAGE pixels, CLASSES classes,
    masks, `num_items` objects per image, and a semantic map each when training a model with a semantic
    branch)."""
    if _generated(cfg):
        from mmdet.registry import DATASETS
        from mmengine.dataset import pseudo_collate

        ds = DATASETS.build(cfg[f"{'train' if training else 'val'}_dataloader"]["dataset"])
        return model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), training=training)
    from mmdet.testing import demo_mm_inputs

    semantic = training and bool(getattr(getattr(model, "roi_head", None), "with_semantic", False))
    raw = demo_mm_inputs(batch_size=2, image_shapes=(3, IMAGE, IMAGE), num_items=num_items, num_classes=CLASSES,
                         with_mask=True, with_semantic=semantic)
    return model.data_preprocessor(raw, training=training)


def train_step(cfg: dict, model, num_items: list[int] | None = None) -> dict:
    """One training step's forward and backward pass on `data(cfg, model, True)`, the weights left as they
    were (a prediction after it sees the model as built); returns the losses. Checks that the loss is
    finite, that every trainable parameter has a gradient (DDP runs without find_unused_parameters), and
    that every part of the detector learns: a gradient that is not all zero, which an SGD step would move
    (not every tensor: zero-initialised residual BNs and context / non-local output layers keep the layers
    before them from a gradient at the first step; `dead_layers` looks closer)."""
    import numpy as np
    import torch

    np.random.seed(0)  # the pipeline's random flips
    model.train()
    model.zero_grad(set_to_none=True)
    losses = model(**data(cfg, model, True, num_items), mode="loss")
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total), losses
    total.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n, p in trainable.items() if p.grad is None]
    assert not missing, f"no gradient: {missing}"
    learnt = {n.split(".")[0] for n, p in trainable.items() if p.grad.any()}
    parts = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert learnt == parts, f"only {sorted(learnt)} learn"
    return losses


def dead_layers(model, zero_at_init: tuple[str, ...] = ()) -> list[str]:
    """After a training step: the RoI head's layers whose gradient is all zero (a wiring mistake), apart from
    those whose name holds one of `zero_at_init` and the RoI layers of pyramid levels no RoI was mapped to
    (kept in the graph with zero gradients)."""
    grads = {n: p.grad for n, p in model.named_parameters() if n.startswith("roi_head.") and p.requires_grad}
    levels = {n.split(".roi_layers.")[0] + ".roi_layers." + n.split(".roi_layers.")[1].split(".")[0]
              for n in grads if ".roi_layers." in n}
    unused = {lvl for lvl in levels if not any(g.any() for n, g in grads.items() if n.startswith(lvl + "."))}
    assert not levels or levels - unused, "no RoI reached any level"
    return sorted({n.rsplit(".", 1)[0] for n, g in grads.items() if not g.any()
                   and not any(part in n for part in zero_at_init) and not any(n.startswith(u + ".") for u in unused)})


def predict(cfg: dict, model) -> list:
    """A prediction for two images (`data(cfg, model, False)`): at most 100 detections each, with a
    full-size mask per box when the model predicts masks. On a bare model config's demo images every image
    gets detections (an untrained softmax head scores each class about 1 / (CLASSES + 1), above the usual
    0.05 threshold)."""
    import torch

    generated = _generated(cfg)
    masks = "segm" in cfg["val_evaluator"]["metric"] if generated else getattr(model, "with_mask", False)
    model.eval()
    with torch.no_grad():
        results = model(**data(cfg, model, False), mode="predict")
    assert len(results) == 2
    for r in results:
        inst = r.pred_instances
        assert len(inst.bboxes) == len(inst.scores) == len(inst.labels) <= 100
        assert generated or len(inst.bboxes) > 0
        if masks:
            assert len(inst.masks) == len(inst.bboxes)
            assert tuple(inst.masks.shape[1:]) == tuple(r.ori_shape)
    return results


def forward_tensor(cfg: dict, model) -> tuple:
    """The tensor mode's outputs for two images (MMDetection's FLOP counter and exporters run it)."""
    import torch

    model.eval()
    with torch.no_grad():
        return model(**data(cfg, model, False), mode="tensor")


def merged_test_mask(head, x: tuple, semantic, rois, image_shape: tuple[int, int] = (IMAGE, IMAGE), **kwargs):
    """The mask probabilities an HTC-like head's `predict_mask` (with `kwargs`) hands to its last mask head
    for `rois` (n, 5) of one image of `image_shape`, its features `x` and semantic features `semantic`."""
    import torch
    from mmengine.structures import InstanceData

    seen = {}
    predict_by_feat = head.mask_head[-1].predict_by_feat

    def spy(mask_preds, **kw):
        seen["merged"] = mask_preds[0]
        return predict_by_feat(mask_preds=mask_preds, **kw)

    head.mask_head[-1].predict_by_feat = spy
    meta = dict(img_shape=tuple(image_shape), ori_shape=tuple(image_shape), scale_factor=(1.0, 1.0))
    results = InstanceData(bboxes=rois[:, 1:], labels=torch.arange(len(rois)) % CLASSES,
                           scores=torch.linspace(0.9, 0.8, len(rois)))
    try:
        head.predict_mask(x, semantic, [meta], [results], **kwargs)
    finally:
        del head.mask_head[-1].predict_by_feat
    return seen["merged"]
