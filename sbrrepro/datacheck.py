"""Checking a COCO-format instance-segmentation split before any GPU time is spent on it.

`check(Split(name, ann, images))` reads the annotation file and every image file's header, and raises
one `UserError` for the first problem it finds, in a fixed order, so the same problem is reported every
time:

1. the annotation file: present, readable, JSON, COCO (`images`, `annotations`, `categories` lists of
   objects);
2. the image folder: present;
3. `images`, in file order: an integer id not seen before, a `file_name`, positive integer width and height;
4. `categories`: an integer id and a name, neither seen before;
5. `annotations`, in file order: an integer id not seen before, an `image_id` that is an image, a
   `category_id` that is a category, a box [x, y, w, h] with w, h > 0 inside the image (1 px of
   tolerance), a segmentation that is polygons (each >= 6 numbers, an even count, none further than
   one image size beyond the border) or an RLE (`counts` a list or a string covering every pixel,
   `size` the image's [height, width]) that pycocotools decodes;
6. image files, in the order of `images`: present, an image, at most `max_pixels` pixels by its header
   (default MAX_PIXELS; a dataset profile's `max_image_pixels`), of the annotation file's width x height
   as MMDetection loads it (a JPEG's EXIF orientation 5-8 swaps the two, as cv2 applies it).

Image headers are read by PIL's `Image.open`, which parses the header only (pixels are never decoded,
so a header claiming gigapixels costs no memory; PIL's own decompression-bomb check is off meanwhile),
in a thread pool: measured on 5,000 PNGs on 2 cores, files not in the page cache take 0.7 s serially and
0.4 s with 8 threads (the reads release the GIL); cached ones take 0.12-0.17 s either way; a process pool
is no faster with fork and 0.3 s slower with forkserver or spawn (start-up and imports).

Cache: with `cache`, a passed check is stored under the annotation file's and the image folder's
resolved paths, with the rules' version and pixel bound, the annotation file's size and mtime (ns) and a
digest of the size and mtime of every image file the check read. A later check under the same rules
whose annotation file and image files all stat the same returns the stored `Summary` without parsing the
JSON or opening an image (a few ms per 1,000 images: one stat each). A hit assumes, as make and rsync
do, that a file whose size and mtime are unchanged holds the same bytes; a changed annotation file, or
an image file deleted, rewritten or touched, is a miss. Files in the folder that the annotation file
does not name play no part. Failed checks are never stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from sbrrepro.errors import UserError
from sbrrepro.files import atomic_write
from sbrrepro.reader import ANNOTATION_BYTES, STUDY_BYTES, read_json

# Bump when a rule changes: a split passed by older rules is checked again.
CHECK_VERSION = 2
# The largest image accepted: where PIL's decompression-bomb check refuses (MMDetection's cv2 would decode it)
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
TOLERANCE = 1.0  # px a box may reach beyond the image's border (rounding in converters)
_NUMBER = frozenset((int, float))  # exact types: a bool is not a coordinate
_ROTATING = frozenset((5, 6, 7, 8))  # EXIF orientations that swap width and height
_CHUNK = 64  # image files per pool task: few enough tasks to keep the pool's overhead small


@dataclass(frozen=True)
class Split:
    """What to check: a split's COCO instances file and the folder its `file_name`s are relative to."""

    name: str
    ann: Path
    images: Path


@dataclass(frozen=True)
class Summary:
    """What a passed check found."""

    split: str
    images: int
    instances: int
    per_class: dict[str, int]  # category name -> instances, in the order of category ids
    empty_images: int  # images without any annotation (MMDetection's filter_empty_gt drops them in training)

    def line(self) -> str:
        classes = ", ".join(f"{name} {n:,}" for name, n in self.per_class.items())
        return (f"{self.split}: {self.images:,} images, {self.instances:,} instances ({classes}), "
                f"{self.empty_images:,} empty")


def check(split: Split, cache: Path | None = None, workers: int | None = None,
          max_pixels: int | None = None) -> Summary:
    """Check `split`; return its summary or raise `UserError` for the first problem. `workers`: threads
    reading image headers (default: 4 per CPU, at most 32; 1: none); `max_pixels`: the largest image
    (default MAX_PIXELS)."""
    max_pixels = max_pixels or MAX_PIXELS
    if cache is not None:
        hit = _cached(split, cache, max_pixels)
        if hit is not None:
            return hit
    ann = split.ann
    ann_stat, coco = _load(ann)  # stat before reading: a file changed meanwhile misses the cache next time
    images, categories, annotations = _lists(ann, coco)
    if not split.images.is_dir():
        message = "is not a folder" if split.images.exists() else "is missing"
        raise UserError(str(split.images), None, f"image folder of split '{split.name}' {message} ({ann.name} "
                        f"names its images relative to it)")
    sizes = _check_images(ann, images)
    names = _check_categories(ann, categories)
    per_image, per_class = _check_annotations(ann, annotations, sizes, names)
    stamps = _check_files(split, images, workers, max_pixels)
    summary = Summary(
        split=split.name,
        images=len(images),
        instances=len(annotations),
        per_class={names[cid]: per_class[cid] for cid in sorted(names)},
        empty_images=sum(1 for image in images if image["id"] not in per_image),
    )
    if cache is not None:
        _store(cache, split, max_pixels, ann_stat, [image["file_name"] for image in images], stamps, summary)
    return summary


# --- the annotation file ----------------------------------------------------------------------------------


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


def _check_images(ann: Path, images: list[dict]) -> dict[int, tuple[int, int]]:
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


def _check_categories(ann: Path, categories: list[dict]) -> dict[int, str]:
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


def _check_annotations(
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


MAX_SIDE = 2**20  # pixels on an image's side in the annotations: any real image's, and arithmetic stays float


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
        runs = _string_counts(counts)
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


def _string_counts(s: str) -> list[int] | None:
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


# --- the image files --------------------------------------------------------------------------------------


def _header(path: str) -> tuple[int, int, int, int, int] | str:
    """(width, height as loaded, EXIF orientation, size, mtime_ns) of the image file, or its problem."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            with Image.open(f) as im:
                width, height = im.size
                orientation = 1
                # cv2.imread (MMDetection's default) and mmcv's pillow backend apply a JPEG's EXIF rotation
                if im.format in ("JPEG", "MPO") and "exif" in im.info:
                    orientation = im.getexif().get(0x0112, 1)
                    if orientation in _ROTATING:
                        width, height = height, width
        return width, height, orientation, st.st_size, st.st_mtime_ns
    except FileNotFoundError:
        return "is missing"
    except IsADirectoryError:
        return "is a folder, not an image"
    except UnidentifiedImageError:
        return "does not open as an image (not a format PIL knows, or a broken header)"
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    except Exception as e:  # PIL's parsers raise SyntaxError, ValueError, struct.error... on broken headers
        return f"does not open as an image ({type(e).__name__}: {e})"


def _headers(paths: list[str]) -> list[tuple[int, int, int, int, int] | str]:
    return [_header(p) for p in paths]


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i: i + n]


def default_workers() -> int:
    # threads mostly wait on the file system (more so on network file systems): a few per CPU
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(32, 4 * cpus)


def _check_files(split: Split, images: list[dict], workers: int | None, max_pixels: int) -> list[tuple[int, int]]:
    """Each image file's (size, mtime_ns), after checking it opens, within `max_pixels`, at the annotation
    file's size."""
    paths = [str(split.images / image["file_name"]) for image in images]
    n = default_workers() if workers is None else workers
    # PIL's own bound, off: it warns per image above its limit and refuses above twice it before the
    # size can be read; `max_pixels` is checked instead, on the size in the header
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        if n <= 1 or len(paths) <= _CHUNK:
            results = _headers(paths)
        else:
            with ThreadPoolExecutor(n, thread_name_prefix="datacheck") as pool:
                results = [r for chunk in pool.map(_headers, _chunks(paths, _CHUNK)) for r in chunk]
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    stamps = []
    for image, path, result in zip(images, paths, results):
        what = f"image id {image['id']} (file_name '{image['file_name']}' in {split.ann.name})"
        if isinstance(result, str):
            raise UserError(path, None, f"{what}: file {result}")
        width, height, orientation, size, mtime_ns = result
        if width * height > max_pixels:
            raise UserError(path, None, f"{what}: the file is {width}x{height} = {width * height:,} pixels by its "
                            f"header, more than the {max_pixels:,} accepted (not decoded; a dataset profile's "
                            "max_image_pixels raises the bound)")
        if (width, height) != (image["width"], image["height"]):
            loaded = f"loads as {width}x{height}"
            if orientation in _ROTATING:
                loaded += f" (its EXIF orientation {orientation} turns its {height}x{width} pixels)"
            raise UserError(path, None, f"{what}: the file {loaded} but the annotation file says "
                            f"{image['width']}x{image['height']} (width x height)")
        stamps.append((size, mtime_ns))
    return stamps


# --- the cache --------------------------------------------------------------------------------------------


def _key(split: Split) -> str:
    return f"{split.ann.resolve()}\n{split.images.resolve()}"


def _digest(names: list[str], stamps: list[tuple[int, int]]) -> str:
    h = hashlib.sha1()
    for name, (size, mtime_ns) in zip(names, stamps):
        h.update(f"{name}\0{size}\0{mtime_ns}\n".encode())
    return h.hexdigest()


def _read_cache(cache: Path) -> dict:
    try:
        data = read_json(cache, STUDY_BYTES)
    except (OSError, UserError):  # absent or damaged: a miss, never an error
        return {}
    return data if isinstance(data, dict) else {}


def _cached(split: Split, cache: Path, max_pixels: int) -> Summary | None:
    entry = _read_cache(cache).get(_key(split))
    try:
        if entry is None or entry["version"] != CHECK_VERSION or entry["max_pixels"] != max_pixels:
            return None
        st = split.ann.stat()
        if [st.st_size, st.st_mtime_ns] != entry["ann"]:
            return None
        names = entry["files"]
        stamps = []
        for name in names:
            s = os.stat(split.images / name)
            stamps.append((s.st_size, s.st_mtime_ns))
        if _digest(names, stamps) != entry["digest"]:
            return None
        return replace(Summary(**entry["summary"]), split=split.name)
    except (OSError, KeyError, TypeError, ValueError):  # a file gone, or an entry of another shape: a miss
        return None


def _store(cache: Path, split: Split, max_pixels: int, ann_stat: os.stat_result, names: list[str],
           stamps: list[tuple[int, int]], summary: Summary) -> None:
    data = _read_cache(cache)  # other splits' entries stay; a concurrent writer's may be lost: a later miss
    data[_key(split)] = {
        "version": CHECK_VERSION,
        "max_pixels": max_pixels,
        "ann": [ann_stat.st_size, ann_stat.st_mtime_ns],
        "files": names,
        "digest": _digest(names, stamps),
        "summary": asdict(summary),
    }
    with contextlib.suppress(OSError):  # a cache that cannot be written costs time, not correctness
        atomic_write(cache, json.dumps(data))
