"""The helpers the tests and the benchmarks share, in one importable module (`tests.helpers`; the
fixtures are in conftest.py): the real command line in a fresh process, the paper's plans and a
modified copy of one, a SLURM cluster's profile and job helpers, the LaTeX and browser checks of what
is meant to be compiled or viewed; and for the model tests (the plugins' tests in tests/models/<paper>/
and the plans' variants) a model, its inputs, one training step and one prediction. A model comes
from a config that is either generated (`generated`: the training's whole config, its images through
its own pipeline) or a bare model config (`shipped_model`: one of MMDetection's shipped models, shrunk
to run on a CPU, fed MMDetection's random demo images).

Light to import: torch, MMDetection and the configs are imported by the helpers that use them.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from sbrrepro.configs import Scale

REPO = Path(__file__).resolve().parents[1]
TABLE3 = REPO / "plans" / "sbr-cnn" / "table3.yaml"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real command line, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "sbrrepro", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout)


@functools.cache
def slurm_up() -> bool:
    """Whether a SLURM cluster answers here (slurm/cluster.sh starts one). Asked once: where none
    runs, sinfo takes seconds to give up."""
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-t", "idle,mix,alloc", "-o", "%D"], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() != ""


def slurm_profile(tmp_path: Path, **changes) -> Path:
    """slurm/local-test.yaml (the test cluster's profile) with `changes`."""
    import yaml

    profile = yaml.safe_load((REPO / "slurm" / "local-test.yaml").read_text())
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump({**profile, **changes}))
    return path


# Held by a start time an hour away: submitted jobs and arrays that never run while a test looks at them.
HELD = {"begin": "now+1hour"}


def settle(executor, job_id: str, folder: Path, timeout: float = 120) -> str:
    """Wait until the job has finished, failed or been cancelled; return which."""
    from sbrrepro.cluster import CANCELLED, FAILED, FINISHED

    deadline = time.time() + timeout
    state = None
    while time.time() < deadline:
        state = executor.state(job_id, folder)
        if state in (FINISHED, FAILED, CANCELLED):
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {state} after {timeout} s")


def interrupt(executor, job_id: str) -> None:
    """Preempt a job as the cluster would: the signal submitit's Checkpointable answers by
    checkpointing and requeueing."""
    import os

    import submitit
    from submitit.local.local import LocalJobEnvironment

    if executor.kind == "slurm":
        submitit.SlurmJob(Path("/nonexistent"), job_id)._interrupt()
    else:  # the job id is submitit's local controller; the signal goes to its tasks
        children = Path(f"/proc/{job_id}/task/{job_id}/children").read_text().split()
        for pid in children:
            os.kill(int(pid), LocalJobEnvironment._usr_sig())


def require_tool(name: str) -> str:
    """The path of a program a test needs (pdflatex, chromium): skipped where it is missing, except
    where SBRREPRO_REQUIRE_TOOLS is set (CI installs them, so there a missing one fails)."""
    import os

    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian's packages: see scripts/report-tools.sh)"
        if os.environ.get("SBRREPRO_REQUIRE_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def compile_latex(tables: list[Path], folder: Path) -> subprocess.CompletedProcess:
    """pdflatex on one document that inputs every table of `tables`: each file copied beside it."""
    pdflatex = require_tool("pdflatex")
    folder.mkdir(parents=True, exist_ok=True)
    inputs = []
    for i, path in enumerate(tables):
        (folder / f"t{i}.tex").write_text(path.read_text())
        inputs.append(rf"\input{{t{i}.tex}}\clearpage")
    (folder / "doc.tex").write_text("\n".join([r"\documentclass{article}", r"\usepackage[T1]{fontenc}",
                                               r"\usepackage{booktabs,amssymb,graphicx}", r"\begin{document}",
                                               *inputs, r"\end{document}", ""]))
    return subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=300)


def open_in_browser(page: Path, folder: Path) -> tuple[dict, Path]:
    """Open an HTML page in headless Chromium: what the loaded page holds (tables, table cells,
    images and how many of them decoded, from a copy of the page with a probe script that writes its
    findings into the DOM), and a screenshot of it."""
    import re

    chromium = require_tool("chromium")
    folder.mkdir(parents=True, exist_ok=True)
    probe = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
             "document.body.setAttribute('data-probe',JSON.stringify({tables:document.querySelectorAll('table').length,"
             "cells:document.querySelectorAll('td').length,images:i.length,"
             "decoded:i.filter(x=>x.complete&&x.naturalWidth>0).length,"
             "width:Math.max(...i.map(x=>x.naturalWidth),0)}));});</script>")
    probed = folder / "probed.html"
    probed.write_text(page.read_text().replace("</body>", probe + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={folder / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True,
                         timeout=120)
    found = re.search(r"data-probe=\"([^\"]*)\"", dom.stdout)
    assert found, dom.stderr[-2000:]
    shot = folder / "screenshot.png"
    subprocess.run([chromium, *flags, "--window-size=1400,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, text=True, timeout=120)
    return json.loads(found.group(1).replace("&quot;", '"')), shot


PLANS = REPO / "plans"
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


# ---- a crafted study: a table plan whose rows end in every verdict, without training (a finished run's
# files written as a finished job leaves them); the `crafted` fixture (conftest.py) and the golden test

CRAFTED_PLAN = """
paper: crafted
table: "1"
title: {title}
metrics: [bbox_AP, segm_AP]
tolerance: 0.5
published: published.csv
recipe_file: {recipe}
rows:
  - {{row: 1, model: mask_rcnn, seeds: [0, 1, 2]}}
  - {{row: 2, model: mask_rcnn, options: {{addon: gcnet}}}}
  - {{row: 3, model: r3_cnn, options: {{loops: 2}}}}
  - {{row: 4, model: r3_cnn, options: {{loops: 3}}}}
  - {{row: 5, cited: "{cited}"}}
  - {{row: 6, model: r3_cnn, options: {{loops: 4}}}}
  - {{row: 7, model: mask_rcnn, recipe: {{epochs: 24, lr_steps: [16, 22]}}}}
  - {{row: 8, derived: [1, 2]}}
"""
CRAFTED_LABELS = ("Mask", "Naive", "R2", "R3", "Other", "R4", "Mask 2x", "Improvement")  # the method column
CRAFTED_PUBLISHED = ((38.2, 34.7), (38.0, 35.0), (40.4, 36.7), (40.9, 37.2), (41.0, 37.0), (40.9, 37.4), (39.0, 35.5),
                     (0.2, -0.3))  # bbox_AP, segm_AP of rows 1 to 8


def crafted_study(tmp_path: Path, *, title: str = "Crafted results", cited: str = "Other et al. 2020",
                  labels: tuple[str, ...] = CRAFTED_LABELS, scale: str = "full", dataset: str | None = None):
    """The crafted plan (tmp_path/plan.yaml, its published.csv beside it: CRAFTED_PUBLISHED under `labels`,
    row 5 citing `cited`) and a study of it at `scale` (tmp_path/study; `dataset`: a dataset profile's
    name, None the scale's own), its configs written and registered, nothing run: (plan, study, row configs)."""
    import csv

    from sbrrepro.config_files import write_configs
    from sbrrepro.configs import full_scale, smoke_scale
    from sbrrepro.plan import load_plan
    from sbrrepro.study import Study

    (tmp_path / "plan.yaml").write_text(CRAFTED_PLAN.format(recipe=PLANS / "sbr-cnn" / RECIPE, title=title,
                                                            cited=cited))
    with (tmp_path / "published.csv").open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["row", "method", "bbox_AP", "segm_AP"])
        out.writerows((n, label, *aps) for n, (label, aps) in enumerate(zip(labels, CRAFTED_PUBLISHED), 1))
    plan = load_plan(tmp_path / "plan.yaml")
    study = Study.open(tmp_path / "study", scale, dataset, create=True)
    sized = full_scale(tmp_path / "coco") if scale == "full" else smoke_scale(tmp_path / "shapes")
    written = write_configs(plan, sized, study.paths)
    study.register((plan.path, written))
    return plan, study, written


def write_scalars(run, lines: list[dict | str], stamp: str = "20260101_000000", tail: str = "") -> Path:
    """MMEngine's log of one start of `run` (a RunPaths), <stamp>/vis_data/scalars.json: a JSON line per
    dict (a str as it is), then `tail` (e.g. a last line cut short by a kill)."""
    path = run.root / stamp / "vis_data" / "scalars.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines) + tail)
    return path


def finish_run(study, key: str, bbox: float, segm: float, lr_scaled: bool = False, epochs: int = 12, *,
               started: float | None = None, device: str = "Tesla V100") -> None:
    """What a finished training leaves (MMEngine's scalars, the job's provenance, done.json), one hour
    long: from `started` (default: an hour ago)."""
    started = time.time() - 3600 if started is None else started
    run = study.paths.run(key)
    write_scalars(run, [{"loss": 1.0, "epoch": epochs, "iter": 1, "step": 1},
                        {"coco/bbox_mAP": bbox, "coco/segm_mAP": segm, "step": epochs}])
    run.provenance.write_text(json.dumps({
        "lr_scaled": lr_scaled, "started": started, "processes": 8, "gpus": 8, "device": device,
        "batch": 32 if lr_scaled else 16, "lr_effective": 0.04 if lr_scaled else 0.02, "seed": 0,
        "versions": {"mmdet": "3.3.0", "mmcv": "2.1.0", "mmengine": "0.10.7", "torch": "2.13.0"},
        "sbrrepro_commit": "abc1234"}))
    run.done.write_text(json.dumps({"epochs": epochs, "finished": started + 3600}))


def crafted_results(plan, study, written, *, log_tail: str | None = None, **finish) -> list:
    """The crafted study's rows' results, every verdict: rows 1 (three seeds), 2, 6 (on another total batch)
    and 7 (half the schedule) finished (`finish`: finish_run's keywords), rows 3 and 4 failed (the end of
    its log: `log_tail`) and running, as their jobs' states say."""
    from dataclasses import replace

    from sbrrepro import jobs
    from sbrrepro.collect import plan_results
    from sbrrepro.params import Counts

    by_row: dict[int, list] = {}
    for rc in written:
        by_row.setdefault(rc.row, []).append(rc)
    # row 1, three seeds: 38.0, 38.2, 38.4 -> 38.2 ± 0.2 (within 0.5 of 38.2 / 34.7)
    for rc, (b, s) in zip(by_row[1], [(0.380, 0.345), (0.382, 0.347), (0.384, 0.349)]):
        finish_run(study, rc.key, b, s, **finish)
    finish_run(study, by_row[2][0].key, 0.370, 0.350, **finish)  # bbox 1.0 below the paper's: not reproduced
    finish_run(study, by_row[6][0].key, 0.410, 0.373, lr_scaled=True, **finish)  # within, on another total batch
    finish_run(study, by_row[7][0].key, 0.391, 0.355, epochs=6, **finish)  # within, but half the schedule
    states = {s.key: s for s in jobs.states(study, written)}
    state_of = {}
    for rc in written:
        s = states[rc.key]
        if rc.row == 3:  # as the executor reports a failed job
            s = replace(s, state="failed", log_tail=log_tail or s.log_tail)
        elif rc.row == 4:
            s = replace(s, state="running")
        state_of[(rc.plan, rc.row, rc.seed)] = s
    return plan_results(study, plan, by_row, state_of, Counts(study.paths.params))


# ---- the command line's JSON, and COCO annotation files written for a test


def cli_json(*args: str, cwd: Path | None = None, timeout: float = 600) -> Any:
    """What the real command line prints with --json (added to `args`), parsed; the command must succeed."""
    result = run_cli(*args, "--json", cwd=cwd, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(result.stdout)


def write_coco(path: Path, images: list[tuple[int, int] | dict], boxes: list[tuple[int, list[float], int]] = (),
               classes: tuple[str, ...] = ("thing",)) -> Path:
    """A COCO instances file at `path`: `images` as (width, height) (ids from 1, files <index>.png) or as COCO's
    image entries; `boxes` as (image id, COCO [x, y, w, h], iscrowd), one annotation each (ids from 1, category
    1, the box's area and its outline as the polygon); `classes` the categories (ids from 1)."""
    coco = {
        "images": [im if isinstance(im, dict) else {"id": i + 1, "file_name": f"{i}.png", "width": im[0],
                                                     "height": im[1]} for i, im in enumerate(images)],
        "annotations": [{"id": k + 1, "image_id": image, "category_id": 1, "bbox": box,
                         "area": float(box[2] * box[3]), "iscrowd": crowd,
                         "segmentation": [[box[0], box[1], box[0] + box[2], box[1], box[0] + box[2], box[1] + box[3],
                                           box[0], box[1] + box[3]]]}
                        for k, (image, box, crowd) in enumerate(boxes)],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    return path


def dry_run_study(tmp_path: Path, *plans: Path):
    """A study of `plans` (default: Table 3) at full scale as `run --dry-run` leaves it in tmp_path/study (its
    configs written and its rows registered; no data, no weights, nothing submitted): (study, the row configs
    of its training rows)."""
    from sbrrepro.prepare import Request, prepare

    prepared = prepare(Request([str(p) for p in plans or (TABLE3,)], tmp_path / "study",
                               data_root=str(tmp_path / "coco"), dry_run=True))
    return prepared.study, [rc for _, rc in prepared.chosen]


def imported_by(module: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules whose names start with one of `prefixes` that importing `module` loads, in a fresh
    process (what its import costs a command that needs nothing else)."""
    code = f"import sys, {module}; print('\\n'.join(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()
