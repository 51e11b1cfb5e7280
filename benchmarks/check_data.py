"""Benchmark: how long `sbrrepro.datacheck.check` takes on a 5,000-image COCO split, first and cached.

    .venv/bin/python -m benchmarks.check_data [--images 5000] [--workers N] [--keep DIR]

Generates (once per run, in a temporary folder unless --keep names one that already holds it) a
synthetic COCO instance-segmentation split of 128x128 PNGs holding a few filled shapes each, every
50th image empty, then prints the seconds of a first check (every image header read) and of a second
one that the cache answers.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from sbrrepro.datacheck import Split, check

CLASSES = ("circle", "square", "triangle")
SIZE = 128


def _polygon(kind: str, cx: float, cy: float, side: float) -> np.ndarray:
    n = {"circle": 16, "square": 4, "triangle": 3}[kind]
    t = np.linspace(0, 2 * math.pi, n, endpoint=False) + math.pi / 4
    return np.stack([cx + np.cos(t) * side / 2, cy + np.sin(t) * side / 2], 1).clip(0, SIZE - 1)


def generate(root: Path, count: int, seed: int = 0) -> Split:
    """Write `count` images and their instances JSON under `root`; return the split. Flat backgrounds
    and PNG compression level 1 keep this to a few seconds: the check reads headers, not pixels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        img = np.full((SIZE, SIZE, 3), int(rng.integers(40, 200)), np.uint8)
        objects = 0 if i % 50 == 49 else int(rng.integers(1, 5))
        for _ in range(objects):
            kind = CLASSES[int(rng.integers(len(CLASSES)))]
            side = float(rng.uniform(8, 48))
            cx, cy = rng.uniform(side / 2, SIZE - side / 2, 2)
            poly = _polygon(kind, cx, cy, side)
            cv2.fillPoly(img, [poly.round().astype(np.int32)], [int(v) for v in rng.integers(0, 256, 3)])
            (x0, y0), (x1, y1) = poly.min(0), poly.max(0)
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": CLASSES.index(kind) + 1,
                "segmentation": [[round(float(v), 2) for v in poly.reshape(-1)]],
                "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
                "area": round(float(cv2.contourArea(poly.astype(np.float32))), 2), "iscrowd": 0,
            })
        name = f"{i:06d}.png"
        cv2.imwrite(str(root / "images" / name), img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        images.append({"id": i + 1, "file_name": name, "width": SIZE, "height": SIZE})
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]
    ann = root / "instances_train.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return Split("train", ann, root / "images")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--keep", type=Path, default=None, help="generate here (once) and keep it")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "coco"
        start = time.perf_counter()
        if args.keep and (root / "instances_train.json").is_file():
            split, made = Split("train", root / "instances_train.json", root / "images"), "reused"
        else:
            split, made = generate(root, args.images), "generated"
        print(f"{made} {args.images} images in {time.perf_counter() - start:.1f} s")
        cache = Path(tmp) / "datacheck-cache.json"  # always fresh: the first check is a miss
        for label in ("first check", "cached check"):
            start = time.perf_counter()
            summary = check(split, cache=cache, workers=args.workers)
            print(f"{label:<13} {time.perf_counter() - start:7.3f} s   {summary.line()}")


if __name__ == "__main__":
    main()
