"""How often a ground-truth box has no RPN anchor above an IoU threshold (SBR-CNN Fig. 1).

For every ground-truth box the RPN is trained on, the highest IoU it reaches with any anchor of the
RPN's anchor generator, on the image as the training pipeline shapes it: Resize(keep_ratio=True) to
the given scale, then padding to a multiple of `pad_divisor` (DetDataPreprocessor), whose feature
maps, one per stride, carry the anchors. RandomFlip is left out: the figure is about where the
anchor grid falls, and a flip only mirrors a box within the same grid.

No anchor set is ever built. The generator puts, at every cell (ix, iy) of a level's feature map,
each of its base anchors shifted by (ix * stride_w, iy * stride_h). A box's overlap with a shifted
anchor along x depends only on the distance between their centres and does not grow with it (the
same along y), so the best anchor of a given shape is at one of the two grid cells nearest the box
centre on each axis. Evaluating those 2 x 2 cells per base anchor and level is exactly the maximum
over the whole grid, at a cost per box that does not depend on the image size; boxes are processed
in chunks, each with its own image's resized and padded size, so COCO train2017 (118k images,
860k boxes) runs in seconds and in memory bounded by the chunk size.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..dataset import ensure_dataset
from ..datasets import DatasetProfile, coco, embedded
from ..errors import UserError
from ..files import atomic_write
from ..layout import StudyPaths
from ..reader import ANNOTATION_BYTES, read_json
from ..rows import RowConfig
from ..zoo import MODELS
from . import pyplot, save

if TYPE_CHECKING:
    from ..plan import Plan

DEFAULT_THRESHOLDS: list[float] = [round(0.05 * i, 2) for i in range(1, 20)]  # 0.05 ... 0.95
_CHUNK = 65536  # boxes per vectorised step: a few tens of MB of temporaries


def _drop_segmentation(obj: dict[str, Any]) -> dict[str, Any]:
    # Polygons are most of a COCO file; dropping them while parsing keeps the peak memory low.
    obj.pop("segmentation", None)
    return obj


def _load_gt(ann_file: Path) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(boxes (N, 4) x1y1x2y2, image sizes (N, 2) height/width), one line per box the RPN trains on.

    Kept as MMDetection's CocoDataset keeps them: boxes marked 'ignore', with no overlap with the
    image, with area <= 0 or a side < 1 are dropped; crowd boxes become ignored instances, which
    the RPN's assigner never sees, so they are dropped too.
    """
    coco = read_json(Path(ann_file), ANNOTATION_BYTES, "COCO instances JSON", _drop_segmentation)
    sizes = {im["id"]: (float(im["height"]), float(im["width"])) for im in coco["images"]}
    boxes, hw = [], []
    for ann in coco["annotations"]:
        if ann.get("ignore", False) or ann.get("iscrowd", False):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        height, width = sizes[ann["image_id"]]
        inter_w = max(0.0, min(x + w, width) - max(x, 0.0))
        inter_h = max(0.0, min(y + h, height) - max(y, 0.0))
        if inter_w * inter_h == 0 or ann.get("area", w * h) <= 0 or w < 1 or h < 1:
            continue
        boxes.append((x, y, x + w, y + h))
        hw.append((height, width))
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(hw, np.float64).reshape(-1, 2)


def _resized_hw(hw: npt.NDArray[np.float64], image_scale: tuple[int, int]) -> npt.NDArray[np.float64]:
    """Image sizes after Resize(scale=image_scale, keep_ratio=True), as mmcv.rescale_size rounds them."""
    long_edge, short_edge = max(image_scale), min(image_scale)
    h, w = hw[:, 0], hw[:, 1]
    factor = np.minimum(long_edge / np.maximum(h, w), short_edge / np.minimum(h, w))
    return np.floor(hw * factor[:, None] + 0.5)  # int(x + 0.5) of a positive x


def featmap_sizes(padded_hw: npt.NDArray[np.float64],
                  strides: Sequence[tuple[int, int]]) -> list[npt.NDArray[np.int64]]:
    """Per level, the (N, 2) feature-map height/width of padded images: each stride-2 step of ResNet
    (and FPN's max-pooled extra level) maps n to ceil(n / 2), so a level of stride s has ceil(n / s)."""
    return [np.ceil(padded_hw / np.array([sh, sw], np.float64)).astype(np.int64) for sw, sh in strides]


def _build_generator(anchor_generator: dict[str, Any]) -> Any:
    import mmdet.models.task_modules  # noqa: F401  (registers the prior generators)
    from mmdet.registry import TASK_UTILS

    return TASK_UTILS.build(dict(anchor_generator))


def _nearest_cells(centre: npt.NDArray[np.float64], base_centre: npt.NDArray[np.float64], stride: float,
                   size: npt.NDArray[np.int64]) -> list[npt.NDArray[np.float64]]:
    """The two grid indices (N, K) whose anchor centres bracket each box centre, inside the map."""
    below = np.floor((centre[:, None] - base_centre[None, :]) / stride)
    top = (size - 1)[:, None].astype(np.float64)
    return [np.clip(below, 0, top), np.clip(below + 1, 0, top)]


def _best_iou_on_level(boxes: npt.NDArray[np.float64], sizes: npt.NDArray[np.int64],
                       base: npt.NDArray[np.float64], stride: tuple[int, int]) -> npt.NDArray[np.float64]:
    """Max IoU (N,) of each box with the anchors of one level, each box on its own (h, w) map."""
    sw, sh = stride
    gx1, gy1, gx2, gy2 = (boxes[:, i, None] for i in range(4))  # (N, 1): broadcast over base anchors
    g_area = (gx2 - gx1) * (gy2 - gy1)
    b_area = (base[:, 2] - base[:, 0]) * (base[:, 3] - base[:, 1])
    xs = _nearest_cells((boxes[:, 0] + boxes[:, 2]) / 2, (base[:, 0] + base[:, 2]) / 2, sw, sizes[:, 1])
    ys = _nearest_cells((boxes[:, 1] + boxes[:, 3]) / 2, (base[:, 1] + base[:, 3]) / 2, sh, sizes[:, 0])
    # Overlap along each axis is separable, so the best of 2 x 2 cells is the best of 2 per axis.
    wx = np.maximum.reduce([np.clip(np.minimum(gx2, base[:, 2] + ix * sw) - np.maximum(gx1, base[:, 0] + ix * sw),
                                    0, None) for ix in xs])
    wy = np.maximum.reduce([np.clip(np.minimum(gy2, base[:, 3] + iy * sh) - np.maximum(gy1, base[:, 1] + iy * sh),
                                    0, None) for iy in ys])
    inter = wx * wy
    return (inter / (g_area + b_area[None, :] - inter)).max(axis=1)


def max_anchor_ious(ann_file: Path, anchor_generator: dict[str, Any], image_scale: tuple[int, int],
                    pad_divisor: int = 32, *, progress: bool = False) -> npt.NDArray[np.float64]:
    """For each ground-truth box of a COCO annotation file (file order; crowd and degenerate boxes
    left out as MMDetection leaves them out of training), its highest IoU with any anchor.

    `anchor_generator` is an mmdet prior-generator config, e.g. the `anchor_generator` of an RPN head; every anchor
    counts, also those crossing the image border (the RPN trains with allowed_border=-1). The images
    are resized with Resize(scale=image_scale, keep_ratio=True), e.g. (1333, 800), and padded to a
    multiple of `pad_divisor`, one image per batch. IoUs are computed in float64.
    """
    generator = _build_generator(anchor_generator)
    bases = [b.double().numpy() for b in generator.base_anchors]
    strides = [(int(sw), int(sh)) for sw, sh in generator.strides]
    if progress:  # parsing is most of the time on COCO train2017 (about 15 s)
        print(f"anchors: reading {ann_file}", file=sys.stderr, flush=True)
    boxes, hw = _load_gt(ann_file)
    new_hw = _resized_hw(hw, image_scale)
    # Resize scales boxes by new/old size per axis, then clips them to the resized image.
    scale = (new_hw / hw)[:, [1, 0, 1, 0]]
    limit = new_hw[:, [1, 0, 1, 0]]
    boxes = np.clip(boxes * scale, 0, limit)
    padded = np.ceil(new_hw / pad_divisor) * pad_divisor
    levels = featmap_sizes(padded, strides)
    out = np.zeros(len(boxes), np.float64)
    for start in range(0, len(boxes), _CHUNK):
        part = slice(start, start + _CHUNK)
        for base, stride, sizes in zip(bases, strides, levels):
            out[part] = np.maximum(out[part], _best_iou_on_level(boxes[part], sizes[part], base, stride))
        if progress:
            print(f"anchors: {min(start + _CHUNK, len(boxes))}/{len(boxes)} boxes", file=sys.stderr, flush=True)
    return out


def percent_without_anchor(ious: npt.ArrayLike, thresholds: Sequence[float]) -> list[float]:
    """Per threshold t, the percentage of boxes whose best anchor IoU is strictly below t.

    Strictly: the paper calls the threshold a minimum ("the maximum IoU ... is 0.55 and we choose a
    minimum threshold of 0.6, then no anchors will be associated"), and MMDetection's MaxIoUAssigner
    labels an anchor positive when IoU >= pos_iou_thr (and gives a box its best anchor when that IoU
    >= min_pos_iou). A box whose best anchor reaches exactly t is still matched at t, so it is missed
    only when its maximum IoU < t.
    """
    values = np.sort(np.asarray(ious, np.float64).ravel())
    if values.size == 0:
        raise ValueError("no ground-truth boxes: the percentages are undefined")
    below = np.searchsorted(values, np.asarray(thresholds, np.float64), side="left")  # count of values < t
    return [100.0 * float(n) / values.size for n in below]


def draw(paths: StudyPaths, rows: list[tuple[Plan, RowConfig]], out: Path, data_root: str | None = None,
         progress: bool = False, profile: DatasetProfile | None = None) -> list[Path]:
    """Per row (an anchor generator), the percentage of ground-truth boxes with no anchor reaching
    each IoU threshold, on a dataset profile's training split, else on COCO's under `data_root`
    (default: $SBRREPRO_COCO; the boxes the RPN trains on) or, without either, on the embedded
    dataset: out.png, out.pdf, and the numbers in out.json."""
    data_root = data_root or os.environ.get("SBRREPRO_COCO")
    if profile is not None:
        dataset = profile.name
    elif data_root:
        profile, dataset = coco(Path(data_root)), "COCO"
    else:
        profile = embedded(ensure_dataset(paths.data))
        dataset = f"embedded ({profile.root.name})"
    curves: dict[str, dict[str, Any]] = {}
    for plan, rc in rows:
        row = plan.row(rc.row)
        ann = profile.root / profile.files("train", row.recipe["train_split"])[0]
        if not ann.exists():
            raise UserError(str(profile.root), None, f"{ann} is missing: expected a COCO folder (--data-root)")
        generator = MODELS[rc.model].build(row.options)["anchor_generator"]
        ious = max_anchor_ious(ann, generator, tuple(row.recipe["image_scale"]), progress=progress)
        curves[f"{dataset}: {rc.label}"] = {"boxes": int(ious.size), "thresholds": DEFAULT_THRESHOLDS,
                                             "percent_without_anchor": percent_without_anchor(ious, DEFAULT_THRESHOLDS)}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, curve in curves.items():
        ax.plot(curve["thresholds"], curve["percent_without_anchor"], marker="o", markersize=3, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 100)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("gt boxes with no anchor at or above it (%)")
    ax.set_title("Ground-truth boxes with no anchor reaching the IoU threshold", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    figures = save(fig, out)
    atomic_write(out.with_suffix(".json"), json.dumps(curves, indent=1))
    return [*figures, out.with_suffix(".json")]


def plot(plan_file: str, study: Path, out: Path | None, data_root: str | None, dataset: str | None,
         progress: bool = False) -> tuple[dict[str, Any], list[Path]]:
    """Fig. 1 as `plot-anchors` draws it: a figure plan's rows (their configs written into `study`,
    at the paper's scale) on a dataset profile's data (`dataset`: its YAML file), else as `draw`
    chooses; returns the numbers and the files written (out: default STUDY/figures/<plan>)."""
    from ..config_files import write_configs
    from ..configs import full_scale
    from ..datasets import load_dataset
    from ..plan import load_plan

    plan = load_plan(plan_file)
    if plan.figure != "anchor_coverage":
        raise UserError(str(plan.path), "figure", "not an anchor_coverage figure plan (see plans/sbr-cnn/fig1.yaml)")
    paths = StudyPaths(study.resolve())
    rows = [(plan, rc) for rc in write_configs(plan, full_scale(Path("coco")), paths)]
    written = draw(paths, rows, out or paths.figure(plan.name), data_root=data_root, progress=progress,
                   profile=load_dataset(dataset) if dataset else None)
    return read_json(written[-1]), written
