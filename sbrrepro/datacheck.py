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

Rules 1 and 3-5, which read the annotation file alone, are `coco_file`'s; this module runs them in this
order, checks the image files and keeps the cache.

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
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sbrrepro import coco_file
from sbrrepro.errors import UserError
from sbrrepro.files import atomic_write
from sbrrepro.reader import STUDY_BYTES, read_json

# Bump when a rule changes: a split passed by older rules is checked again.
CHECK_VERSION = 2
# The largest image accepted: where PIL's decompression-bomb check refuses (MMDetection's cv2 would decode it)
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
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
    # stat before reading: a file changed meanwhile misses the cache next time
    ann_stat, images, categories, annotations = coco_file.read(ann)
    if not split.images.is_dir():
        message = "is not a folder" if split.images.exists() else "is missing"
        raise UserError(str(split.images), None, f"image folder of split '{split.name}' {message} ({ann.name} "
                        f"names its images relative to it)")
    sizes = coco_file.check_images(ann, images)
    names = coco_file.check_categories(ann, categories)
    per_image, per_class = coco_file.check_annotations(ann, annotations, sizes, names)
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
