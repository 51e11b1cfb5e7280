"""sbrrepro.coco_file, called directly: the annotation file read into its three lists, then images,
categories and annotations checked entry by entry. What they return on a valid file, and the first
problem as one UserError naming the file, the entry and the id, at the edges of each rule (exact types:
a boolean is no id or coordinate; the box tolerance; the polygon bounds; RLE sizes and counts)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sbrrepro import coco_file
from sbrrepro.coco_file import MAX_SIDE, TOLERANCE, check_annotations, check_categories, check_images, read
from sbrrepro.errors import UserError

ANN = Path("/data/instances_train.json")  # the checks name the file and never open it
SQUARE = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]
IMAGES = [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
          {"id": 7, "file_name": "sub/b.jpg", "width": 100, "height": 100}]
CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 3, "name": "square"}, {"id": 4, "name": "triangle"}]
ANNOTATIONS = [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "segmentation": [SQUARE]},
               {"id": 11, "image_id": 7, "category_id": 3, "bbox": [0.5, 0, 99.5, 100.0], "segmentation": [SQUARE]},
               {"id": 12, "image_id": 7, "category_id": 3, "bbox": [5, 5, 10, 10], "segmentation": [SQUARE, SQUARE]}]


def _error(call, *args) -> UserError:
    with pytest.raises(UserError) as e:
        call(ANN, *args)
    assert e.value.where == str(ANN) and "\n" not in str(e.value)
    return e.value


def _annotation_error(**changes: Any) -> UserError:
    """The error of the valid annotations with annotation 12 (annotations[2], on the 100x100 image 7) changed."""
    annotations = copy.deepcopy(ANNOTATIONS)
    annotations[2].update(changes)
    return _error(check_annotations, annotations, check_images(ANN, IMAGES), check_categories(ANN, CATEGORIES))


# ---- read: the file and its three lists


def test_read_returns_images_categories_annotations(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"info": {}, "annotations": ANNOTATIONS, "categories": CATEGORIES, "images": IMAGES}))
    stat, images, categories, annotations = read(path)
    assert (images, categories, annotations) == (IMAGES, CATEGORIES, ANNOTATIONS)
    assert stat.st_size == path.stat().st_size and stat.st_mtime_ns == path.stat().st_mtime_ns


@pytest.mark.parametrize("text, field, said", [
    ("null", None, "is not COCO: the top level is null, not an object with images, annotations and categories"),
    ("3", None, "the top level is a number"),
    ('"coco"', None, "the top level is a string"),
    ('{"images": [], "annotations": []}', "categories", "is missing: a COCO instances file holds images, "
                                                         "annotations and categories"),
    ('{"images": [], "annotations": {}, "categories": []}', "annotations", "must be a list, not an object"),
    ('{"images": null, "annotations": [], "categories": []}', "images", "must be a list, not null"),
    ('{"images": [{}, "b"], "annotations": [], "categories": []}', "images[1]", "must be an object, not a string"),
    ('{"images": [], "annotations": [], "categories": [true]}', "categories[0]", "must be an object, not a boolean"),
])
def test_read_refuses_what_is_not_coco(tmp_path: Path, text: str, field: str | None, said: str) -> None:
    path = tmp_path / "instances.json"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        read(path)
    assert (e.value.where, e.value.field) == (str(path), field) and said in e.value.message


@pytest.mark.parametrize("make, said", [
    (lambda p: None, "annotation file is missing"),
    (lambda p: p.mkdir(), "is a folder, not a COCO annotation file"),
    (lambda p: p.write_text("{"), "not valid JSON (line 1, column 2)"),
])
def test_read_refuses_the_file(tmp_path: Path, make, said: str) -> None:
    path = tmp_path / "instances.json"
    make(path)
    with pytest.raises(UserError) as e:
        read(path)
    assert str(e.value).startswith(f"{path}: ") and said in str(e.value)


# ---- images


def test_images_sizes_by_id() -> None:
    assert check_images(ANN, IMAGES) == {1: (64, 48), 7: (100, 100)}
    assert check_images(ANN, []) == {}


def test_image_side_bounds() -> None:
    assert check_images(ANN, [{"id": 1, "file_name": "a", "width": MAX_SIDE, "height": 1}]) == {1: (MAX_SIDE, 1)}
    e = _error(check_images, [{"id": 1, "file_name": "a", "width": MAX_SIDE + 1, "height": 1}])
    assert (e.field, e.message) == ("images[0].width", "image id 1: must be a positive integer (pixels) up to "
                                    f"{MAX_SIDE:,}, not {MAX_SIDE + 1}")


@pytest.mark.parametrize("index, changes, field, message", [
    (0, {"id": True}, "images[0].id", "must be an integer, not true"),
    (1, {"id": 1.0}, "images[1].id", "must be an integer, not 1.0"),
    (1, {"id": 1}, "images[1].id", "image id 1 is duplicated (first at images[0])"),
    (1, {"file_name": ""}, "images[1].file_name", 'image id 7: must be a file name relative to the image folder, '
                                                  'not ""'),
    (0, {"file_name": None}, "images[0].file_name", "image id 1: must be a file name relative to the image folder, "
                                                    "not null"),
    (1, {"height": 100.0}, "images[1].height", "image id 7: must be a positive integer (pixels) up to 1,048,576, "
                                               "not 100.0"),
    (0, {"width": -5}, "images[0].width", "image id 1: must be a positive integer (pixels) up to 1,048,576, not -5"),
    (0, {"height": False}, "images[0].height", "image id 1: must be a positive integer (pixels) up to 1,048,576, "
                                               "not false"),
])
def test_bad_image(index: int, changes: dict, field: str, message: str) -> None:
    images = copy.deepcopy(IMAGES)
    images[index].update(changes)
    e = _error(check_images, images)
    assert (e.field, e.message) == (field, message)


def test_image_without_id() -> None:
    assert _error(check_images, [{"file_name": "a", "width": 1, "height": 1}]).message == \
        "must be an integer, not null"


# ---- categories


def test_category_names_by_id() -> None:
    assert check_categories(ANN, CATEGORIES) == {1: "circle", 3: "square", 4: "triangle"}


@pytest.mark.parametrize("index, changes, field, message", [
    (1, {"id": 1}, "categories[1].id", "category id 1 is duplicated"),
    (0, {"id": "1"}, "categories[0].id", 'must be an integer, not "1"'),
    (2, {"id": True}, "categories[2].id", "must be an integer, not true"),
    (1, {"name": ""}, "categories[1].name", 'category id 3: must be a name, not ""'),
    (1, {"name": 3}, "categories[1].name", "category id 3: must be a name, not 3"),
    (2, {"name": "circle"}, "categories[2].name", "category id 4: name 'circle' is also category id 1's"),
])
def test_bad_category(index: int, changes: dict, field: str, message: str) -> None:
    categories = copy.deepcopy(CATEGORIES)
    categories[index].update(changes)
    e = _error(check_categories, categories)
    assert (e.field, e.message) == (field, message)


# ---- annotations


def test_instances_per_image_and_per_category() -> None:
    """Every category is counted, those without instances as 0; images without any are left out."""
    sizes = check_images(ANN, [*IMAGES, {"id": 9, "file_name": "c.png", "width": 8, "height": 8}])
    per_image, per_class = check_annotations(ANN, ANNOTATIONS, sizes, check_categories(ANN, CATEGORIES))
    assert per_image == {1: 1, 7: 2}
    assert per_class == {1: 1, 3: 2, 4: 0}
    assert check_annotations(ANN, [], sizes, {1: "circle"}) == ({}, {1: 0})


@pytest.mark.parametrize("changes, field, message", [
    ({"id": 10}, "id", "annotation id 10 is duplicated (first at annotations[0])"),
    ({"id": None}, "id", "must be an integer, not null"),
    ({"image_id": 2}, "image_id", "annotation id 12: image_id 2 is not the id of any image"),
    ({"image_id": True}, "image_id", "annotation id 12: image_id true is not the id of any image"),  # not image 1
    ({"image_id": "7"}, "image_id", 'annotation id 12: image_id "7" is not the id of any image'),
    ({"category_id": 2}, "category_id", "annotation id 12 (image id 7): category_id 2 is not the id of any category"),
    ({"category_id": True}, "category_id", "annotation id 12 (image id 7): category_id true is not the id of any "
                                           "category"),
])
def test_bad_annotation_ids(changes: dict, field: str, message: str) -> None:
    e = _annotation_error(**changes)
    assert (e.field, e.message) == (f"annotations[2].{field}", message)


def test_box_tolerance_edges() -> None:
    """A box may reach TOLERANCE px beyond each border of the 100x100 image, not further."""
    edge = 100 + TOLERANCE
    for box in ([-TOLERANCE, -TOLERANCE, edge + TOLERANCE, edge + TOLERANCE], [0, 0, edge, edge], [99, 99, 2, 2]):
        annotations = [{**ANNOTATIONS[1], "bbox": box}]
        assert check_annotations(ANN, annotations, {7: (100, 100)}, {3: "square"}) == ({7: 1}, {3: 1})
    e = _annotation_error(bbox=[0, 0, 101.5, 50])
    assert e.message == ("annotation id 12 (image id 7): box [x, y, width, height] = [0, 0, 101.5, 50] spans "
                         "x 0..101.5, y 0..50: outside the 100x100 image (by more than 1 px)")
    assert "outside" in _annotation_error(bbox=[-1.5, 0, 10, 10]).message


@pytest.mark.parametrize("box, said", [
    ([1, 2, 3, True], "box [1, 2, 3, true] must be 4 numbers [x, y, width, height]"),
    ([1, 2, 3, "4"], 'box [1, 2, 3, "4"] must be 4 numbers'),
    ([1, 2, 3, 4, 5], "must be 4 numbers"),
    ({"x": 1}, 'box {"x": 1} must be 4 numbers'),
    ([1, 2, float("nan"), 4], "box [1, 2, NaN, 4] must be 4 numbers"),
    ([1, 2, 10**400, 4], "must be 4 numbers"),  # of hundreds of digits: no float holds it
    ([5, 5, 0, 10], "has a non-positive width (0)"),
    ([5, 5, 10, -0.5], "has a non-positive height (-0.5)"),
    (None, "the box (bbox) is missing"),
])
def test_bad_box(box: Any, said: str) -> None:
    e = _annotation_error(bbox=box)
    assert e.field == "annotations[2].bbox" and e.message.startswith("annotation id 12 (image id 7): ")
    assert said in e.message, e.message


def test_polygon_bounds() -> None:
    """Points may lie up to an image's size beyond it (the rasteriser clips them), not further."""
    far = [-100, -100, 200, -100, 200, 200]
    annotations = [{**ANNOTATIONS[1], "segmentation": [far]}]
    assert check_annotations(ANN, annotations, {7: (100, 100)}, {3: "square"}) == ({7: 1}, {3: 1})
    e = _annotation_error(segmentation=[SQUARE, [-100, -100, 200.5, -100, 200, 200]])
    assert e.message == ("annotation id 12 (image id 7): polygon 1 has points far outside the 100x100 image (or "
                         "not finite): [-100, -100, 200.5, -100, 200, 200]")


@pytest.mark.parametrize("segmentation, said", [
    ([SQUARE, [1, 1, 5, 1, 5, True]], "polygon 1 must be a list of numbers [x1, y1, x2, y2, ...], not "
                                      "[1, 1, 5, 1, 5, true]"),
    ([SQUARE, 5], "polygon 1 must be a list of numbers [x1, y1, x2, y2, ...], not 5"),
    ([[1, 1, 5, 1, 5]], "polygon 0 has 5 coordinates: a polygon needs an even number, at least 6"),
    ([[1, 2, 3, 4, 5, 10**400]], "polygon 0 has points far outside"),
    ([], "segmentation is an empty list: it must hold at least one polygon"),
    (3, "segmentation must be polygons (a list of lists of numbers) or an RLE (an object), not a number"),
    (None, "the segmentation is missing (instance segmentation needs one per annotation)"),
])
def test_bad_polygons(segmentation: Any, said: str) -> None:
    e = _annotation_error(segmentation=segmentation)
    assert e.field == "annotations[2].segmentation" and said in e.message, e.message


def _mask_rle(compressed: bool) -> dict:
    mask = np.zeros((100, 100), np.uint8)
    mask[20:40, 30:70] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    if compressed:
        return {"size": rle["size"], "counts": rle["counts"].decode()}
    return {"size": [100, 100], "counts": coco_file.string_counts(rle["counts"].decode())}


@pytest.mark.parametrize("compressed", [True, False])
def test_rle_passes(compressed: bool) -> None:
    annotations = [{**ANNOTATIONS[1], "segmentation": _mask_rle(compressed)}]
    assert check_annotations(ANN, annotations, {7: (100, 100)}, {3: "square"}) == ({7: 1}, {3: 1})


@pytest.mark.parametrize("rle, said", [
    ({"counts": [10000]}, "an RLE segmentation needs 'counts' and 'size', not [\"counts\"]"),
    ({"size": [100, 100, 1], "counts": [10000]}, "RLE size must be [height, width], not [100, 100, 1]"),
    ({"size": [100, True], "counts": [10000]}, "RLE size must be [height, width], not [100, true]"),
    ({"size": [100, 50], "counts": [5000]}, "RLE size [100, 50] [height, width] differs from the image's [100, 100]"),
    ({"size": [100, 100], "counts": [5000, -1, 5001]}, "RLE counts must be non-negative integers"),
    ({"size": [100, 100], "counts": [5000, 5000.0]}, "RLE counts must be non-negative integers"),
    ({"size": [100, 100], "counts": [5000, 4999]}, "RLE counts cover 9,999 pixels, not the image's 100x100 = 10,000"),
    ({"size": [100, 100], "counts": "5220003"}, "RLE counts cover 20 pixels"),
    ({"size": [100, 100], "counts": "P"}, "RLE counts is not a valid compressed RLE string"),
    ({"size": [100, 100], "counts": None}, "RLE counts must be a list of integers or a compressed string, not null"),
])
def test_bad_rle(rle: dict, said: str) -> None:
    e = _annotation_error(segmentation=rle)
    assert e.field == "annotations[2].segmentation" and said in e.message, e.message


def test_long_values_shortened() -> None:
    e = _annotation_error(bbox=list(range(100)))
    shown = e.message.removeprefix("annotation id 12 (image id 7): box ").removesuffix(
        " must be 4 numbers [x, y, width, height]")
    assert len(shown) == 60 and shown.endswith("...") and shown.startswith("[0, 1, 2, ")


# ---- compressed RLE strings


def test_string_counts_decodes_pycocotools_strings() -> None:
    """Runs after the third are stored as differences from the run two before."""
    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 1:4] = 1
    counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
    assert counts == "5220003"
    assert coco_file.string_counts(counts) == [5, 2, 2, 2, 2, 2, 5]
    # rows 20-39 of columns 30-69 of a 100x100 image, column by column
    assert coco_file.string_counts(_mask_rle(True)["counts"]) == [3020] + [20, 80] * 39 + [20, 3060]
    assert coco_file.string_counts("") == []


@pytest.mark.parametrize("counts", ["P", "5P", "~", " ", "@"], ids=["cut", "cut-later", "above", "below", "negative"])
def test_string_counts_malformed(counts: str) -> None:
    assert coco_file.string_counts(counts) is None
