"""R^3-CNN (naive, 3 loops) against HTC: training-step and inference time as ratios taken in one run.

The paper (Table 2) finds R^3-CNN lighter than HTC (43.9M against 77.2M parameters) at about the
same speed (3.4 against 3.3 images/s). Both models come from the Table 2 plan with the paper's
256-channel heads; the data is sbrrepro's embedded dataset, and the backbone the smoke scale's
ResNet-18 (the same for both, so the ratios measure the heads). Rounds alternate between the two
models so that a noisy machine slows both alike; medians are reported.

    .venv/bin/python -m benchmarks.r3_vs_htc [--rounds 5] [--images 320]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sbrrepro.configs import build_config, build_model, smoke_scale
from sbrrepro.dataset import SyntheticSpec, ensure_dataset
from sbrrepro.params import trainable
from sbrrepro.plan import load_plan
from sbrrepro.speed import device_name

PLAN = Path(__file__).resolve().parents[1] / "plans" / "sbr-cnn" / "table2.yaml"
HTC_ROW, R3_ROW = 3, 4


def _model_and_batches(cfg: dict, device: str):
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    model = build_model(cfg).to(device)
    model.init_weights()
    train = DATASETS.build(cfg["train_dataloader"]["dataset"])
    val = DATASETS.build(cfg["val_dataloader"]["dataset"])
    train_batch = model.data_preprocessor(pseudo_collate([train[0], train[1]]), training=True)
    val_batch = model.data_preprocessor(pseudo_collate([val[0]]), training=False)
    return model, train_batch, val_batch


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=320, help="image side after resizing (default: %(default)s)")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    plan = load_plan(PLAN)
    root = ensure_dataset(Path(tempfile.mkdtemp()), SyntheticSpec(train_images=4, val_images=2))
    scale = dataclasses.replace(smoke_scale(root), width=256, images=args.images)
    models = {}
    for name, number in (("HTC", HTC_ROW), ("R^3-CNN", R3_ROW)):
        row = next(r for r in plan.rows if r.number == number)
        models[name] = _model_and_batches(build_config(row, scale), device)

    step: dict[str, list[float]] = {n: [] for n in models}
    infer: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(args.rounds + 1):  # the first round warms up
        for name, (model, train_batch, val_batch) in models.items():
            model.train()

            def train_step(model=model, batch=train_batch) -> None:
                total, _ = model.parse_losses(model(**batch, mode="loss"))
                total.backward()
                model.zero_grad()

            def predict(model=model, batch=val_batch) -> None:
                with torch.no_grad():
                    model(**batch, mode="predict")

            step[name].append(_timed(train_step))
            model.eval()
            infer[name].append(_timed(predict))
    print(f"device: {device_name()}; heads at 256 channels, images {args.images}px, {args.rounds} rounds")
    for name, (model, _, _) in models.items():
        print(f"{name:<8} trainable {trainable(model):>11,}  train step {statistics.median(step[name][1:]):.3f} s  "
              f"inference {statistics.median(infer[name][1:]):.3f} s/img")
    ratio = {k: statistics.median(v["R^3-CNN"][1:]) / statistics.median(v["HTC"][1:])
             for k, v in (("step", step), ("infer", infer))}
    print(f"R^3-CNN / HTC: training step time {ratio['step']:.2f}, inference time {ratio['infer']:.2f} "
          f"(paper, on V100: inference 3.3 / 3.4 img/s = {3.3 / 3.4:.2f})")


if __name__ == "__main__":
    main()
