"""The embedded default dataset: small synthetic COCO-format instance segmentation.

Images hold a few filled polygons of three shape classes on a noisy background. Each object is
annotated with its polygon, box and area exactly as COCO does, so the real MMDetection pipeline
(CocoDataset, polygon masks, CocoMetric with pycocotools) runs unchanged on it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; the folder name carries these values so different specs never mix."""

    train_images: int = 48
    val_images: int = 16
    size: int = 128
    max_objects: int = 3
    # sides from 8 to 112 px: areas in all three of COCO's size ranges (small below 32^2, large above
    # 96^2), so every AP_s/AP_m/AP_l column is computed
    min_side: int = 8
    max_side: int = 112
    seed: int = 0

    def folder_name(self) -> str:
        return "shapes-{train_images}-{val_images}-{size}-{max_objects}-{min_side}-{max_side}-{seed}".format(
            **asdict(self)
        )


def _shape_polygon(kind: str, cx: float, cy: float, side: float, angle: float) -> np.ndarray:
    """Vertices (N, 2) of one shape, centred on (cx, cy), with its longest extent about `side`."""
    if kind == "circle":
        t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * side / 2
    elif kind == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * side / 2
    else:
        t = np.array([90, 210, 330]) * math.pi / 180
        pts = np.stack([np.cos(t), -np.sin(t)], 1) * side / 2
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return pts @ rot.T + np.array([cx, cy])


def _make_image(rng: np.random.Generator, spec: SyntheticSpec) -> tuple[np.ndarray, list[dict]]:
    img = rng.normal(110, 25, (spec.size, spec.size, 3)).clip(0, 255).astype(np.uint8)
    occupied: list[tuple[float, float, float, float]] = []
    objects = []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        for _attempt in range(20):
            kind = CLASSES[int(rng.integers(len(CLASSES)))]
            side = float(rng.uniform(spec.min_side, spec.max_side))
            cx, cy = rng.uniform(side / 2 + 1, spec.size - side / 2 - 1, 2)
            poly = _shape_polygon(kind, cx, cy, side, float(rng.uniform(0, math.pi)))
            poly = poly.clip(0, spec.size - 1)
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            # Objects do not overlap, so every mask is exactly its polygon.
            if all(x1 < a or x0 > c or y1 < b or y0 > d for a, b, c, d in occupied):
                break
        else:
            continue
        occupied.append((x0, y0, x1, y1))
        colour = [int(v) for v in rng.integers(0, 256, 3)]
        cv2.fillPoly(img, [np.round(poly).astype(np.int32)], colour)
        area = float(cv2.contourArea(poly.astype(np.float32)))
        objects.append(
            {
                "category_id": CLASSES.index(kind) + 1,
                "segmentation": [[round(float(v), 2) for v in poly.reshape(-1)]],
                "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
                "area": round(area, 2),
                "iscrowd": 0,
            }
        )
    return img, objects


def _write_split(root: Path, split: str, count: int, rng: np.random.Generator, spec: SyntheticSpec) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        img, objects = _make_image(rng, spec)
        name = f"{i:05d}.png"
        cv2.imwrite(str(root / split / name), img)
        images.append({"id": i + 1, "file_name": name, "width": spec.size, "height": spec.size})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **obj})
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)],
    }
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def ensure_dataset(parent: Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Generate the dataset under `parent` once; return its root. Safe against interruption:
    the dataset is built in a temporary folder and renamed into place when complete."""
    root = parent / spec.folder_name()
    if root.is_dir():
        return root
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{root.name}.tmp-{os.getpid()}"
    rng = np.random.default_rng(spec.seed)
    _write_split(tmp, "train", spec.train_images, rng, spec)
    _write_split(tmp, "val", spec.val_images, rng, spec)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return root
