"""The embedded default dataset: small synthetic COCO-format instance and semantic segmentation.

Images hold a few filled polygons of three shape classes ("things") on a background split into two
textured "stuff" regions. Each object is annotated with its polygon, box and area exactly as COCO does,
so the real MMDetection pipeline (CocoDataset, polygon masks, CocoMetric with pycocotools) runs
unchanged on it. Most images hold at least two distinct classes (multi-label targets for SCNet's
global-context head), the objects never overlap, and their sides span all three of COCO's size ranges.

Layout under the root (named by `SyntheticSpec.folder_name()`), after COCO and COCO-stuff, its names
those of `sbrrepro.datasets.embedded`:

    train/, val/, test/                      the images, 00000.png, 00001.png, ...
    annotations/instances_train.json         COCO instances (images, annotations, categories)
    annotations/instances_val.json
    annotations/image_info_test.json         the test split as COCO's image_info_test-dev2017.json: info,
                                             licenses, images, categories and no annotations
    withheld/instances_test.json             the test split's ground truth, kept out of annotations/
    stuffthingmaps/{train,val}/<stem>.png    uint8 label maps (HTC's semantic branch): thing pixels hold
                                             category_id - 1 (0..len(CLASSES)-1), the two background
                                             regions len(CLASSES) + their index in STUFF, and background
                                             pixels on a 2 px border 255 (ignore)

The background of each image is cut by a random straight line through its middle half; one side is
painted "noise" (flat grey with Gaussian noise), the other "stripes" (orange-brown two-tone stripes of
random angle and 6-10 px period), so the stuff classes differ in colour and texture. Image pixels,
label-map pixels and the annotations' masks come from the same pycocotools rasterisation of each
polygon, so they coincide exactly. Every fourth image of a split holds a large object (a square or
circle above 96^2 px), so each split has objects in all three of COCO's size ranges.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from .datasets import embedded

CLASSES = ("circle", "square", "triangle")
STUFF = ("noise", "stripes")  # the background's classes, labels len(CLASSES) + index in the stuff maps
SEMANTIC_CLASSES = len(CLASSES) + len(STUFF)
IGNORE_LABEL = 255
BORDER = 2  # px of background at the image's edge labelled IGNORE_LABEL in the stuff maps


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; the folder name carries these values so different specs never mix."""

    train_images: int = 48
    val_images: int = 16
    test_images: int = 16
    size: int = 128
    max_objects: int = 4
    # sides from 8 to 112 px: areas in all three of COCO's size ranges (small below 32^2, large above
    # 96^2), so every AP_s/AP_m/AP_l column is computed
    min_side: int = 8
    max_side: int = 112
    seed: int = 0

    def folder_name(self) -> str:
        # "v2": the layout with stuff maps and a test split; no folder of the first layout is reused
        return ("shapes-v2-{train_images}-{val_images}-{test_images}-{size}-{max_objects}-{min_side}-{max_side}"
                "-{seed}").format(**asdict(self))


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


def _rasterise(flat_poly: list[float], size: int) -> np.ndarray:
    """The polygon's mask (bool, size x size) as pycocotools' annToMask (and MMDetection's
    PolygonMasks) draw it."""
    rle = mask_utils.merge(mask_utils.frPyObjects([flat_poly], size, size))
    return mask_utils.decode(rle).astype(bool)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The textured background and its stuff index per pixel (0: noise, 1: stripes)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    # the split: a straight line through a random point of the image's middle half, at a random angle
    # (the angle in [0, 2 pi) also picks which side is which)
    px, py = rng.uniform(0.25 * size, 0.75 * size, 2)
    theta = float(rng.uniform(0, 2 * math.pi))
    region = ((xs - px) * math.cos(theta) + (ys - py) * math.sin(theta) > 0).astype(np.uint8)

    noise = rng.normal(110, 25, (size, size, 3))
    phi, period, phase = float(rng.uniform(0, math.pi)), float(rng.uniform(6, 10)), float(rng.uniform(0, 10))
    on = (np.floor((xs * math.cos(phi) + ys * math.sin(phi) + phase) / (period / 2)) % 2).astype(bool)
    stripes = np.where(on[..., None], [110.0, 160.0, 210.0], [50.0, 100.0, 150.0])  # BGR, as cv2 writes
    stripes = stripes + rng.normal(0, 10, (size, size, 3))
    img = np.where(region[..., None].astype(bool), stripes, noise)
    return img.clip(0, 255).astype(np.uint8), region


def _make_image(
    rng: np.random.Generator, spec: SyntheticSpec, large: bool
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One image, its semantic label map and its objects (COCO annotations without ids). With `large`,
    its first object is a square or circle of COCO's large range (area above 96^2) where the spec's
    sides allow one."""
    import cv2  # only where images are made: a dry run, which imports this module, never loads it

    size = spec.size
    img, region = _background(rng, size)
    labels = (len(CLASSES) + region).astype(np.uint8)
    labels[:BORDER], labels[-BORDER:], labels[:, :BORDER], labels[:, -BORDER:] = (IGNORE_LABEL,) * 4

    # Most images hold two or more objects, their classes distinct as far as the classes go.
    count = int(rng.integers(2, spec.max_objects + 1)) if spec.max_objects > 1 and rng.random() < 0.9 else 1
    kinds = [CLASSES[int(k)] for k in rng.permutation(len(CLASSES))][:count]
    if large and kinds[0] == "triangle":  # a triangle's area (0.32 side^2) is large only beyond 168 px
        if count > 1:
            kinds[0], kinds[1] = kinds[1], kinds[0]
        else:
            kinds[0] = ("circle", "square")[int(rng.integers(2))]
    kinds += [CLASSES[int(k)] for k in rng.integers(len(CLASSES), size=count - len(kinds))]
    kernel = np.ones((5, 5), np.uint8)
    occupied = np.zeros((size, size), bool)  # objects' pixels grown by 2 px: objects keep apart
    objects = []
    for n, kind in enumerate(kinds):
        # The first object's side is uniform over the range (in a `large` image: over its top 15%, tried
        # until the area is large); a later one that finds no room shrinks its range of sides try by try
        # until it fits around the objects already there.
        want_large = large and n == 0
        low, high = (0.85 * spec.max_side if want_large else spec.min_side), float(spec.max_side)
        for attempt in range(30):
            side = float(rng.uniform(low, max(high, low)))
            cx, cy = rng.uniform(side / 2 + 1, size - side / 2 - 1, 2)
            poly = _shape_polygon(kind, cx, cy, side, float(rng.uniform(0, math.pi))).clip(0, size - 1)
            flat = [round(float(v), 2) for v in poly.reshape(-1)]
            mask = _rasterise(flat, size)
            area = float(cv2.contourArea(poly.astype(np.float32)))
            if mask.any() and not (mask & occupied).any() and (not want_large or area > 96**2 or attempt == 29):
                break
            if not want_large:
                high *= 0.85
        else:
            continue
        occupied |= cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
        img[mask] = [int(v) for v in rng.integers(0, 256, 3)]
        labels[mask] = CLASSES.index(kind)
        x0, y0 = poly.min(0)
        x1, y1 = poly.max(0)
        objects.append(
            {
                "category_id": CLASSES.index(kind) + 1,
                "segmentation": [flat],
                "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
                "area": round(area, 2),
                "iscrowd": 0,
            }
        )
    return img, labels, objects


def _categories() -> list[dict]:
    return [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]


def _write_split(folder: Path, maps: Path | None, count: int, rng: np.random.Generator, spec: SyntheticSpec) -> dict:
    """Write a split's images into `folder` (and its stuff maps into `maps`); return its COCO dict."""
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    if maps is not None:
        maps.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        # every fourth image holds a large object: all of COCO's size ranges are in every split
        img, labels, objects = _make_image(rng, spec, large=i % 4 == 0)
        name = f"{i:05d}.png"
        cv2.imwrite(str(folder / name), img)
        if maps is not None:
            cv2.imwrite(str(maps / name), labels)
        images.append({"id": i + 1, "file_name": name, "width": spec.size, "height": spec.size})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **obj})
    return {"images": images, "annotations": annotations, "categories": _categories()}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _build(root: Path, spec: SyntheticSpec) -> None:
    rng = np.random.default_rng(spec.seed)
    layout = embedded(root)  # the file names, as the configs read them
    for role, count in (("train", spec.train_images), ("val", spec.val_images)):
        ann, images = layout.files(role)
        _write_json(root / ann, _write_split(root / images, root / layout.semantic_maps(role), count, rng, spec))
    ann, images = layout.files("test")
    test = _write_split(root / images, None, spec.test_images, rng, spec)
    info = {"description": "sbrrepro synthetic shapes, test split (annotations withheld)", "version": "2"}
    _write_json(root / ann, {"info": info, "licenses": [], "images": test["images"], "categories": test["categories"]})
    _write_json(root / str(layout.withheld), test)


def ensure_dataset(parent: Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Generate the dataset under `parent` once; return its root. Safe against interruption:
    the dataset is built in a temporary folder and renamed into place when complete."""
    root = parent / spec.folder_name()
    if root.is_dir():
        return root
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted run of a process with this id
    _build(tmp, spec)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return root
