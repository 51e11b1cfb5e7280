"""sbrrepro.datacheck: a valid split passes with the right summary, each kind of bad split fails with one
message naming the file, the id and the problem, and the cache answers unchanged data without the images."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from sbrrepro import coco_file, datacheck
from sbrrepro.datacheck import Split, Summary, check
from sbrrepro.dataset import CLASSES, SyntheticSpec, ensure_dataset
from sbrrepro.errors import UserError
from tests.helpers import write_coco


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A small generated dataset (6 training images), never modified: tests corrupt copies."""
    spec = SyntheticSpec(train_images=6, val_images=2, test_images=1, max_objects=3)
    return ensure_dataset(tmp_path_factory.mktemp("data"), spec)


def _copy(source: Path, dest: Path, edit=None, name: str = "train") -> Split:
    """The source's `name` split copied under `dest`, its COCO dict passed through `edit` first."""
    shutil.copytree(source / name, dest / name)
    coco = json.loads((source / "annotations" / f"instances_{name}.json").read_text())
    if edit:
        edit(coco)
    ann = dest / f"instances_{name}.json"
    ann.write_text(json.dumps(coco))
    return Split(name, ann, dest / name)


def _bump_mtime(path: Path) -> None:
    """Make sure a rewrite shows in the mtime even on a coarse-clocked file system."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_valid_split_summary(source, tmp_path):
    split = _copy(source, tmp_path)
    coco = json.loads(split.ann.read_text())
    summary = check(split)
    counts = Counter(a["category_id"] for a in coco["annotations"])
    assert summary == Summary(
        split="train",
        images=6,
        instances=len(coco["annotations"]),
        per_class={name: counts[i + 1] for i, name in enumerate(CLASSES)},
        empty_images=0,
    )
    assert summary.line().startswith(f"train: 6 images, {len(coco['annotations'])} instances (circle ")
    assert summary.line().endswith(", 0 empty")


def test_empty_images_counted(source, tmp_path):
    def drop_first_two(coco):
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] not in (1, 2)]

    summary = check(_copy(source, tmp_path, drop_first_two), workers=1)
    assert summary.images == 6 and summary.empty_images == 2
    assert summary.instances == sum(summary.per_class.values())


def test_thread_pool_and_serial_agree(source, tmp_path, monkeypatch):
    split = _copy(source, tmp_path)
    monkeypatch.setattr(datacheck, "_CHUNK", 2)  # several pool tasks on 6 images
    assert check(split, workers=4) == check(split, workers=1)


def _rle(mask: np.ndarray, compressed: bool) -> dict:
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": rle["size"], "counts": rle["counts"].decode()}
    flat = mask.astype(np.uint8).flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


@pytest.mark.parametrize("compressed", [True, False], ids=["string-counts", "list-counts"])
def test_rle_segmentation_passes(source, tmp_path, compressed):
    def to_rle(coco):
        for a in coco["annotations"][:3]:
            rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], 128, 128))
            a["segmentation"] = _rle(mask_utils.decode(rle), compressed)
            a["iscrowd"] = 1

    assert check(_copy(source, tmp_path, to_rle)).images == 6


def test_string_counts_match_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.random()
        runs = coco_file.string_counts(_rle(mask, compressed=True)["counts"])
        assert runs == _rle(mask, compressed=False)["counts"] or runs == [0] + _rle(mask, False)["counts"]
        assert sum(runs) == mask.size


def test_box_within_tolerance_passes(source, tmp_path):
    def nudge(coco):
        a = coco["annotations"][0]
        a["bbox"] = [-0.9, -0.5, 128.8, 129.0]  # reaches 127.9 x, 128.5 y: inside the 1 px tolerance

    check(_copy(source, tmp_path, nudge))


# --- bad splits: (what is done to a copy, words the message must hold) -------------------------------------


def _ann(n, **fields):
    def edit(coco):
        coco["annotations"][n].update(fields)
    return edit


def _coco(fn):
    return ("coco", fn)


def _files(fn):
    return ("files", fn)


def _write_text(text):
    return _files(lambda split: split.ann.write_text(text))


BAD = {
    "ann-missing": (_files(lambda s: s.ann.unlink()), ["annotation file is missing"]),
    "ann-folder": (_files(lambda s: (s.ann.unlink(), s.ann.mkdir())), ["is a folder"]),
    "not-json": (_write_text('{"images": ['), ["not valid JSON", "line 1"]),
    "not-utf8": (_files(lambda s: s.ann.write_bytes(b"\x80\x81")), ["not UTF-8", "line 1, column 1"]),
    "top-level-list": (_write_text("[]"), ["is not COCO", "a list"]),
    "no-categories": (_coco(lambda c: c.pop("categories")), ["field 'categories'", "is missing"]),
    "images-not-list": (_coco(lambda c: c.update(images={})), ["field 'images'", "must be a list, not an object"]),
    "annotation-not-object": (_coco(lambda c: c["annotations"].insert(1, 7)),
                              ["field 'annotations[1]'", "must be an object"]),
    "image-folder-missing": (_files(lambda s: shutil.rmtree(s.images)), ["image folder", "is missing"]),
    "image-id-duplicated": (_coco(lambda c: c["images"][3].update(id=2)),
                            ["field 'images[3].id'", "image id 2 is duplicated", "images[1]"]),
    "image-id-not-int": (_coco(lambda c: c["images"][0].update(id="1")), ["images[0].id", "must be an integer"]),
    "image-width-bad": (_coco(lambda c: c["images"][2].update(width=0)),
                        ["images[2].width", "image id 3", "positive integer"]),
    "annotation-id-duplicated": (_coco(lambda c: c["annotations"][4].update(id=c["annotations"][1]["id"])),
                                 ["field 'annotations[4].id'", "is duplicated", "annotations[1]"]),
    "unknown-image": (_coco(_ann(2, image_id=999)), ["annotations[2].image_id", "image_id 999 is not the id of"]),
    "unknown-category": (_coco(_ann(2, category_id=42)),
                         ["annotations[2].category_id", "category_id 42 is not the id of any category"]),
    "category-id-duplicated": (_coco(lambda c: c["categories"][2].update(id=1)), ["category id 1 is duplicated"]),
    "image-file-missing": (_files(lambda s: (s.images / "00003.png").unlink()),
                           ["00003.png", "image id 4", "instances_train.json", "file is missing"]),
    "not-an-image": (_files(lambda s: (s.images / "00002.png").write_text("not a png")),
                     ["00002.png", "image id 3", "does not open as an image"]),
    "image-size-differs": (_files(lambda s: cv2.imwrite(str(s.images / "00001.png"), np.zeros((100, 64, 3), np.uint8))),
                           ["00001.png", "image id 2", "loads as 64x100", "says 128x128"]),
    "box-zero-width": (_coco(_ann(1, bbox=[10, 10, 0, 5])), ["annotations[1].bbox", "non-positive width"]),
    "box-negative-height": (_coco(_ann(1, bbox=[10, 10, 5, -3])), ["annotations[1].bbox", "non-positive height"]),
    "box-outside": (_coco(_ann(3, bbox=[120, 10, 9.5, 5])), ["annotations[3].bbox", "x 120..129.5", "outside"]),
    "box-not-numbers": (_coco(_ann(3, bbox=[1, 2, 3])), ["annotations[3].bbox", "must be 4 numbers"]),
    "box-missing": (_coco(lambda c: c["annotations"][0].pop("bbox")), ["annotations[0].bbox", "is missing"]),
    "segmentation-string": (_coco(_ann(0, segmentation="abc")), ["annotations[0].segmentation", "polygons",
                                                                  "or an RLE", "not a string"]),
    "segmentation-missing": (_coco(lambda c: c["annotations"][0].pop("segmentation")), ["segmentation is missing"]),
    "segmentation-empty": (_coco(_ann(0, segmentation=[])), ["empty list"]),
    "polygon-odd": (_coco(_ann(5, segmentation=[[1, 1, 20, 1, 20, 20, 1]])),
                    ["annotations[5].segmentation", "polygon 0 has 7 coordinates", "even"]),
    "polygon-short": (_coco(_ann(5, segmentation=[[1, 1, 20, 20]])), ["polygon 0 has 4 coordinates"]),
    "polygon-not-numbers": (_coco(_ann(5, segmentation=[[1, 1, 20, 1, 20, "20"]])), ["must be a list of numbers"]),
    "polygon-far-outside": (_coco(_ann(5, segmentation=[[1, 1, 2e12, 1, 20, 20]])), ["far outside"]),
    "rle-no-counts": (_coco(_ann(2, segmentation={"size": [128, 128]})), ["needs 'counts' and 'size'"]),
    "rle-size-differs": (_coco(_ann(2, segmentation={"size": [64, 64], "counts": [4096]})),
                         ["RLE size [64, 64]", "differs from the image's [128, 128]"]),
    "rle-counts-short": (_coco(_ann(2, segmentation={"size": [128, 128], "counts": [1, 2]})),
                         ["cover 3 pixels", "16,384"]),
    "rle-string-bad": (_coco(_ann(2, segmentation={"size": [128, 128], "counts": "zz~~"})),
                       ["not a valid compressed RLE string"]),
    "rle-counts-number": (_coco(_ann(2, segmentation={"size": [128, 128], "counts": 5})),
                          ["counts must be a list of integers or a compressed string"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_split(source, tmp_path, case):
    (kind, fn), words = BAD[case]
    split = _copy(source, tmp_path, fn if kind == "coco" else None)
    if kind == "files":
        fn(split)
    with pytest.raises(UserError) as info:
        check(split)
    message = str(info.value)
    # the file at fault first: the annotation file, or the image folder or file
    image_file = case in ("image-file-missing", "not-an-image", "image-size-differs")
    at = split.images if image_file or case == "image-folder-missing" else split.ann
    assert message.startswith(str(at) + (os.sep if image_file else ":")), message
    found = re.search(r"annotations\[(\d+)\]\.", message)
    if found:  # an annotation's problem names its id
        n = int(found.group(1))
        assert f"annotation id {json.loads(split.ann.read_text())['annotations'][n]['id']}" in message, message
    for word in words:
        assert word in message, (word, message)
    assert "\n" not in message
    with pytest.raises(UserError) as again:  # the same problem, every time
        check(split)
    assert str(again.value) == message


def test_exif_rotation_counts(tmp_path):
    """A JPEG whose EXIF orientation turns it loads rotated in cv2 (MMDetection's loader): its annotated
    width and height must be the rotated ones."""
    (tmp_path / "img").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp_path / "img" / "a.jpg", exif=exif)
    assert cv2.imread(str(tmp_path / "img" / "a.jpg")).shape[:2] == (64, 32)
    ann = write_coco(tmp_path / "ann.json", [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 32}])
    with pytest.raises(UserError, match=r"image id 7 .* loads as 32x64 \(its EXIF orientation 6 turns its 64x32"):
        check(Split("s", ann, tmp_path / "img"))
    write_coco(ann, [{"id": 7, "file_name": "a.jpg", "width": 32, "height": 64}])
    assert check(Split("s", ann, tmp_path / "img")) == Summary("s", 1, 0, {"thing": 0}, 1)


def test_first_problem_in_fixed_order(source, tmp_path):
    """With a bad box and a missing image file, the box (the annotation file's checks come first) is
    reported, and of two bad boxes the earlier annotation."""
    def two_bad_boxes(coco):
        coco["annotations"][4]["bbox"] = [0, 0, 0, 1]
        coco["annotations"][2]["bbox"] = [0, 0, 1, 0]

    split = _copy(source, tmp_path, two_bad_boxes)
    (split.images / "00000.png").unlink()
    for workers in (1, 4):
        with pytest.raises(UserError, match=r"annotations\[2\]\.bbox"):
            check(split, workers=workers)


def test_first_missing_image_in_list_order(source, tmp_path, monkeypatch):
    split = _copy(source, tmp_path)
    for name in ("00004.png", "00001.png", "00005.png"):
        (split.images / name).unlink()
    monkeypatch.setattr(datacheck, "_CHUNK", 1)  # each file its own pool task: they finish in any order
    with pytest.raises(UserError, match=r"00001\.png: image id 2 "):
        check(split, workers=3)


# --- the cache ---------------------------------------------------------------------------------------------


def test_cache_answers_without_opening_images(source, tmp_path, monkeypatch):
    split = _copy(source, tmp_path)
    cache = tmp_path / "cache" / "datacheck.json"
    first = check(split, cache=cache)
    assert cache.is_file()

    def no_opening(path):
        raise AssertionError(f"opened {path}")

    monkeypatch.setattr(datacheck, "_header", no_opening)
    monkeypatch.setattr(coco_file, "read", no_opening)
    assert check(split, cache=cache) == first
    renamed = Split("training", split.ann, split.images)  # the key is the paths; the summary takes the name
    assert check(renamed, cache=cache).split == "training"


@pytest.mark.parametrize("change", ["image-deleted", "image-rewritten", "image-touched", "ann-rewritten"])
def test_cache_misses_on_change(source, tmp_path, monkeypatch, change):
    split = _copy(source, tmp_path)
    cache = tmp_path / "datacheck.json"
    check(split, cache=cache)
    image = split.images / "00002.png"
    if change == "image-deleted":
        image.unlink()
        expected = "file is missing"
    elif change == "image-rewritten":
        cv2.imwrite(str(image), np.zeros((128, 100, 3), np.uint8))
        _bump_mtime(image)
        expected = "loads as 100x128"
    elif change == "image-touched":  # same bytes, new mtime: checked again (and passes)
        _bump_mtime(image)
        calls, header = [], datacheck._header
        monkeypatch.setattr(datacheck, "_header", lambda p: calls.append(p) or header(p))
        check(split, cache=cache, workers=1)
        assert len(calls) == 6
        return
    else:
        coco = json.loads(split.ann.read_text())
        coco["annotations"][0]["category_id"] = 9
        split.ann.write_text(json.dumps(coco))
        _bump_mtime(split.ann)
        expected = "category_id 9"
    with pytest.raises(UserError, match=expected):
        check(split, cache=cache)


def test_cache_keeps_splits_apart_and_survives_damage(source, tmp_path):
    train, val = _copy(source, tmp_path), _copy(source, tmp_path, name="val")
    cache = tmp_path / "datacheck.json"
    cache.write_text("{ damaged")
    a, b = check(train, cache=cache), check(val, cache=cache)
    assert (a.images, b.images) == (6, 2)
    assert len(json.loads(cache.read_text())) == 2
    assert check(train, cache=cache) == a and check(val, cache=cache) == b


def test_failed_check_not_cached(source, tmp_path):
    split = _copy(source, tmp_path)
    cache = tmp_path / "datacheck.json"
    (split.images / "00000.png").rename(tmp_path / "aside.png")
    with pytest.raises(UserError):
        check(split, cache=cache)
    assert not cache.exists()
    (tmp_path / "aside.png").rename(split.images / "00000.png")
    assert check(split, cache=cache).images == 6
