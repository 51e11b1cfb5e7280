"""The COCO instances file of a split: read, and its entries checked one by one (rules 1 and 3-5 of
`datacheck`, which runs them in its fixed order and checks the image files).

Each function raises one `UserError` for the first problem, naming the file, the entry (`images[3].id`)
and the image or annotation id; nothing here touches the image files. A rule changed here must bump
`datacheck.CHECK_VERSION`, or splits passed under the old rule stay cached as passed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from sbrrepro.errors import UserError
from sbrrepro.reader import ANNOTATION_BYTES, read_json

TOLERANCE = 1.0  # px a box may reach beyond the image's border (rounding in converters)
MAX_SIDE = 2**20  # pixels on an image's side in the annotations: any real image's, and arithmetic stays float
_NUMBER = frozenset((int, float))  # exact types: a bool is not a coordinate


def read(ann: Path) -> tuple[os.stat_result, list[dict], list[dict], list[dict]]:
    """The annotation file's stat and its `images`, `categories` and `annotations`, each checked to be a
    list of objects."""
    ann_stat, coco = _load(ann)
    return (ann_stat, *_lists(ann, coco))


def _load(ann: Path) -> tuple[os.stat_result, Any]:
    try:
        return ann.stat(), read_json(ann, ANNOTATION_BYTES, "COCO instances JSON")
    except FileNotFoundError:
        raise UserError(str(ann), None, "annotation file is missing") from None
    except IsADirectoryError:
        raise UserError(str(ann), None, "is a folder, not a COCO annotation file") from None
    except OSError as e:
        raise UserError(str(ann), None, f"annotation file cannot be read: {e.strerror or e}") from None


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _lists(ann: Path, coco: Any) -> tuple[list[dict], list[dict], list[dict]]:
    """COCO's three lists, each checked to be a list of objects."""
    if not isinstance(coco, dict):
        raise UserError(str(ann), None, f"is not COCO: the top level is {_type(coco)}, not an object with "
                        "images, annotations and categories")
    out = []
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise UserError(str(ann), key, "is missing: a COCO instances file holds images, annotations and "
                            "categories")
        value = coco[key]
        if not isinstance(value, list):
            raise UserError(str(ann), key, f"must be a list, not {_type(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise UserError(str(ann), f"{key}[{i}]", f"must be an object, not {_type(item)}")
        out.append(value)
    return out[0], out[2], out[1]


def _is_int(value: Any) -> bool:
    return type(value) is int


def check_images(ann: Path, images: list[dict]) -> dict[int, tuple[int, int]]:
    """Image id -> (width, height)."""
    sizes: dict[int, tuple[int, int]] = {}
    first: dict[int, int] = {}
    for i, image in enumerate(images):
        iid = image.get("id")
        if not _is_int(iid):
            raise UserError(str(ann), f"images[{i}].id", f"must be an integer, not {_show(iid)}")
        if iid in first:
            raise UserError(str(ann), f"images[{i}].id",
                            f"image id {iid} is duplicated (first at images[{first[iid]}])")
        first[iid] = i
        name = image.get("file_name")
        if not isinstance(name, str) or not name:
            raise UserError(str(ann), f"images[{i}].file_name", f"image id {iid}: must be a file name relative to "
                            f"the image folder, not {_show(name)}")
        for key in ("width", "height"):
            v = image.get(key)
            if not _is_int(v) or not 0 < v <= MAX_SIDE:
                raise UserError(str(ann), f"images[{i}].{key}", f"image id {iid}: must be a positive integer "
                                f"(pixels) up to {MAX_SIDE:,}, not {_show(v)}")
        sizes[iid] = (image["width"], image["height"])
    return sizes


def check_categories(ann: Path, categories: list[dict]) -> dict[int, str]:
    """Category id -> name."""
    names: dict[int, str] = {}
    by_name: dict[str, int] = {}
    for i, category in enumerate(categories):
        cid, name = category.get("id"), category.get("name")
        if not _is_int(cid):
            raise UserError(str(ann), f"categories[{i}].id", f"must be an integer, not {_show(cid)}")
        if cid in names:
            raise UserError(str(ann), f"categories[{i}].id", f"category id {cid} is duplicated")
        if not isinstance(name, str) or not name:
            raise UserError(str(ann), f"categories[{i}].name", f"category id {cid}: must be a name, not {_show(name)}")
        if name in by_name:  # MMDetection maps class names to category ids: two ids of one name are ambiguous
            raise UserError(str(ann), f"categories[{i}].name",
                            f"category id {cid}: name '{name}' is also category id {by_name[name]}'s")
        names[cid], by_name[name] = name, cid
    return names


def check_annotations(
    ann: Path, annotations: list[dict], sizes: dict[int, tuple[int, int]], names: dict[int, str]
) -> tuple[dict[int, int], dict[int, int]]:
    """Instances per image id and per category id."""
    per_image: dict[int, int] = {}
    per_class = dict.fromkeys(names, 0)
    seen: dict[int, int] = {}
    for i, a in enumerate(annotations):
        where = f"annotations[{i}]"
        aid = a.get("id")
        if not _is_int(aid):
            raise UserError(str(ann), f"{where}.id", f"must be an integer, not {_show(aid)}")
        if aid in seen:
            raise UserError(str(ann), f"{where}.id", f"annotation id {aid} is duplicated (first at "
                            f"annotations[{seen[aid]}])")
        seen[aid] = i
        iid, cid = a.get("image_id"), a.get("category_id")
        if not _is_int(iid) or iid not in sizes:
            raise UserError(str(ann), f"{where}.image_id", f"annotation id {aid}: image_id {_show(iid)} is not "
                            "the id of any image")
        if not _is_int(cid) or cid not in names:
            raise UserError(str(ann), f"{where}.category_id", f"annotation id {aid} (image id {iid}): "
                            f"category_id {_show(cid)} is not the id of any category")
        width, height = sizes[iid]
        problem = _box_problem(a.get("bbox"), width, height)
        if problem:
            raise UserError(str(ann), f"{where}.bbox", f"annotation id {aid} (image id {iid}): {problem}")
        problem = _segmentation_problem(a.get("segmentation"), width, height)
        if problem:
            raise UserError(str(ann), f"{where}.segmentation", f"annotation id {aid} (image id {iid}): {problem}")
        per_image[iid] = per_image.get(iid, 0) + 1
        per_class[cid] += 1
    return per_image, per_class


def _show(value: Any, limit: int = 60) -> str:
    """A value as the annotation file spells it, shortened."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer of hundreds of digits
        return False


def _box_problem(box: Any, width: int, height: int) -> str | None:
    if box is None:
        return "the box (bbox) is missing"
    if not isinstance(box, list) or len(box) != 4 or not set(map(type, box)) <= _NUMBER \
            or not all(map(_finite, box)):
        return f"box {_show(box)} must be 4 numbers [x, y, width, height]"
    x, y, w, h = box
    if w <= 0 or h <= 0:
        side, value = ("width", w) if w <= 0 else ("height", h)
        return f"box [x, y, width, height] = {_show(box)} has a non-positive {side} ({value:g})"
    if x < -TOLERANCE or y < -TOLERANCE or x + w > width + TOLERANCE or y + h > height + TOLERANCE:
        return (f"box [x, y, width, height] = {_show(box)} spans x {x:g}..{x + w:g}, y {y:g}..{y + h:g}: outside "
                f"the {width}x{height} image (by more than {TOLERANCE:g} px)")
    return None


def _segmentation_problem(seg: Any, width: int, height: int) -> str | None:
    if seg is None:
        return "the segmentation is missing (instance segmentation needs one per annotation)"
    if isinstance(seg, list):
        return _polygons_problem(seg, width, height)
    if isinstance(seg, dict):
        return _rle_problem(seg, width, height)
    return f"segmentation must be polygons (a list of lists of numbers) or an RLE (an object), not {_type(seg)}"


def _polygons_problem(polygons: list, width: int, height: int) -> str | None:
    # pycocotools is not called on polygons: once the rules below hold, its rasterisation cannot fail (and
    # costs ~50 us a polygon, most of the check's time); they also keep it from the huge allocations that
    # coordinates far outside the image make it attempt.
    if not polygons:
        return "segmentation is an empty list: it must hold at least one polygon"
    for k, poly in enumerate(polygons):
        if not isinstance(poly, list) or not set(map(type, poly)) <= _NUMBER:
            return f"polygon {k} must be a list of numbers [x1, y1, x2, y2, ...], not {_show(poly)}"
        if len(poly) < 6 or len(poly) % 2:
            return (f"polygon {k} has {len(poly)} coordinates: a polygon needs an even number, at least 6 "
                    "(3 points of x, y)")
        xs, ys = poly[0::2], poly[1::2]
        if not _finite(sum(poly)) or min(xs) < -width or max(xs) > 2 * width or min(ys) < -height \
                or max(ys) > 2 * height:
            return f"polygon {k} has points far outside the {width}x{height} image (or not finite): {_show(poly)}"
    return None


def _rle_problem(rle: dict, width: int, height: int) -> str | None:
    if "counts" not in rle or "size" not in rle:
        return f"an RLE segmentation needs 'counts' and 'size', not {_show(sorted(rle))}"
    size, counts = rle["size"], rle["counts"]
    if not isinstance(size, list) or len(size) != 2 or not all(map(_is_int, size)):
        return f"RLE size must be [height, width], not {_show(size)}"
    if size != [height, width]:
        return f"RLE size {size} [height, width] differs from the image's [{height}, {width}]"
    if isinstance(counts, list):
        if not all(map(_is_int, counts)) or any(c < 0 for c in counts):
            return "RLE counts must be non-negative integers"
        runs = counts
    elif isinstance(counts, str):
        runs = string_counts(counts)
        if runs is None:
            return "RLE counts is not a valid compressed RLE string"
    else:
        return f"RLE counts must be a list of integers or a compressed string, not {_type(counts)}"
    # pycocotools decodes a too-short RLE without complaint, from memory it never wrote: check the sum first
    if sum(runs) != height * width:
        return f"RLE counts cover {sum(runs):,} pixels, not the image's {height}x{width} = {height * width:,}"
    try:
        obj = mask_utils.frPyObjects(rle, height, width) if isinstance(counts, list) else rle
        mask_utils.decode(obj)
    except Exception as e:  # pycocotools raises ValueError, TypeError or OverflowError, alike to the user
        return f"RLE does not decode with pycocotools: {e}"
    return None


def string_counts(s: str) -> list[int] | None:
    """The runs of a compressed RLE string, as pycocotools' rleFrString reads them; None if malformed."""
    runs: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            if p >= len(s):
                return None  # the string ends inside a number
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign extension
        if len(runs) > 2:
            x += runs[-2]  # runs after the third are stored as differences
        if x < 0:
            return None
        runs.append(x)
    return runs

