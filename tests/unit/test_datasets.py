"""Dataset profiles. The built-in ones (COCO, the embedded set) name their files as the configs and the
generator use them. A dataset of the user's: a COCO-format dataset made from real photos (matplotlib's
sample images), with classes that are not COCO's (non-contiguous ids), polygon and RLE masks, described
by a dataset profile; the smoke models train and evaluate on it, the configs take its classes, and a
profile that points at nothing is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from sbrrepro.configs import build_config, full_scale, on_profile, smoke_scale
from sbrrepro.datasets import coco, embedded, load_dataset
from sbrrepro.errors import UserError
from sbrrepro.plan import load_plan
from tests.helpers import TABLE3, cli_json, copy_plan

CLASSES = {7: "portrait", 12: "tile"}  # ids and names of the user's own, not COCO's


def _photos() -> list[np.ndarray]:
    import matplotlib.cbook

    names = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
    return [cv2.resize(cv2.imread(str(matplotlib.cbook.get_sample_data(n, asfileobj=False))), (320, 240))
            for n in names]


def _image(rng: np.random.Generator, photos: list[np.ndarray], size: tuple[int, int]) -> tuple[np.ndarray, list]:
    """A crop of one photo with an ellipse cut from the other (a polygon) and a rectangle of it (RLE)."""
    import pycocotools.mask as mask_util

    h, w = size
    back, front = (photos[i] for i in rng.permutation(2))
    y, x = (int(rng.integers(0, s - t)) for s, t in zip(back.shape[:2], size))
    img = back[y:y + h, x:x + w].copy()
    objects = []
    cx, cy, ax, ay = int(rng.integers(30, 60)), int(rng.integers(30, h - 30)), int(rng.integers(12, 25)), \
        int(rng.integers(12, 25))
    poly = cv2.ellipse2Poly((cx, cy), (ax, ay), 0, 0, 360, 15)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [poly], 1)
    img[mask > 0] = cv2.resize(front, (w, h))[mask > 0]
    objects.append(dict(category_id=7, segmentation=[poly.reshape(-1).astype(float).tolist()]))
    x0, y0 = int(rng.integers(w // 2 + 5, w - 40)), int(rng.integers(5, h - 40))
    x1, y1 = x0 + int(rng.integers(20, 35)), y0 + int(rng.integers(20, 35))
    tile = np.zeros((h, w), np.uint8, order="F")
    tile[y0:y1, x0:x1] = 1
    img[y0:y1, x0:x1] = front[:y1 - y0, :x1 - x0]
    rle = mask_util.encode(np.asfortranarray(tile))
    objects.append(dict(category_id=12, segmentation={"size": rle["size"], "counts": rle["counts"].decode()}))
    for obj, m in zip(objects, (mask, tile)):
        ys, xs = np.nonzero(m)
        obj.update(bbox=[float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                         float(ys.max() - ys.min() + 1)], area=float(m.sum()), iscrowd=0)
    return img, objects


def make_dataset(root: Path, train: int = 6, val: int = 3) -> Path:
    """The dataset and its profile (train and val under images/, as many COCO exports lay them out)."""
    rng = np.random.default_rng(0)
    photos = _photos()
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for split, count in (("train", train), ("val", val)):
        images, annotations = [], []
        for i in range(count):
            img, objects = _image(rng, photos, (120, 160))
            name = f"{split}_{i:03d}.jpg"
            cv2.imwrite(str(root / "images" / name), img)
            images.append(dict(id=100 + i, file_name=name, height=120, width=160))
            annotations += [dict(id=len(annotations) + k + 1, image_id=100 + i, **o) for k, o in enumerate(objects)]
        coco = dict(images=images, annotations=annotations,
                    categories=[dict(id=k, name=v, supercategory="mine") for k, v in CLASSES.items()])
        (root / "annotations" / f"{split}.json").write_text(json.dumps(coco))
    profile = root / "mydata.yaml"
    profile.write_text(yaml.safe_dump({"name": "mydata", "train": {"ann": "annotations/train.json", "images": "images"},
                                       "val": {"ann": "annotations/val.json", "images": "images"}}))
    return profile


def test_coco_names_its_files_after_the_recipes_splits(tmp_path):
    data = coco(tmp_path)
    assert data.files("train", "train2017") == ("annotations/instances_train2017.json", "train2017/")
    assert data.files("val") == ("annotations/instances_val2017.json", "val2017/")  # the recipes' default
    assert data.files("test", "test-dev2017") == ("annotations/image_info_test-dev2017.json", "test2017/")
    assert data.semantic_maps("train", "train2017") == "stuffthingmaps/train2017/"
    scale = full_scale(tmp_path)
    assert (scale.data_id, scale.classes, scale.profile) == ("coco", None, None)
    assert scale.files("val", "test-dev2017") == data.files("test", "test-dev2017")  # the server's split


def test_the_embedded_set_has_one_split_per_role_and_withholds_its_tests(tmp_path):
    data = embedded(tmp_path / "shapes-v2-x")
    assert data.files("train", "train2017") == ("annotations/instances_train.json", "train/")
    assert data.files("test", "test-dev2017") == ("annotations/image_info_test.json", "test/")
    assert data.semantic_maps("val") == "stuffthingmaps/val/" and data.withheld == "withheld/instances_test.json"
    scale = smoke_scale(tmp_path / "shapes-v2-x")
    assert scale.data_id == "shapes-v2-x" and scale.profile is None and scale.dataset == data
    assert scale.files("val", "test-dev2017") == data.files("test")


def test_a_users_profile_keeps_its_identity_and_paths(tmp_path):
    """The identity enters every key: the same layout and classes, the same digest as ever."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.json").write_text(json.dumps(
        {"images": [], "annotations": [], "categories": [{"id": 9, "name": "b"}, {"id": 2, "name": "a"}]}))
    profile = tmp_path / "p.yaml"
    profile.write_text("name: mine\ntrain: {ann: annotations/train.json, images: images}\n"
                       "val: {ann: annotations/train.json, images: images}\n")
    assert load_dataset(str(profile)).identity == "mine-0edbd13f"
    profile.write_text("name: mine\ntrain: {ann: annotations/train.json, images: images}\n"
                       "val: {ann: annotations/val.json, images: images/}\ntest: {ann: annotations/test.json, "
                       "images: test}\nsemantic: {train: maps/train, classes: 5}\n")
    data = load_dataset(str(profile))
    assert data.identity == "mine-fe7b5ce4" and data.classes == ("a", "b") and data.semantic_classes == 5
    assert data.files("train", "train2017") == ("annotations/train.json", "images/")
    assert data.files("test", "test-dev2017") == ("annotations/test.json", "test/")
    assert data.semantic_maps("train", "train2017") == "maps/train/"
    with pytest.raises(UserError, match="semantic maps"):
        data.semantic_maps("val", "val2017")
    profile.write_text("name: mine\ntrain: {ann: annotations/train.json, images: 'images/{split}'}\n"
                       "val: {ann: annotations/train.json, images: images}\n")
    assert load_dataset(str(profile)).files("train", "train2017")[1] == "images/{split}/"  # taken as written
    with pytest.raises(UserError, match="evaluates on the test split"):
        load_dataset(str(profile)).files("test", "test-dev2017")


def test_the_configs_take_the_profiles_classes_and_files(tmp_path):
    profile = load_dataset(str(make_dataset(tmp_path / "data")))
    assert profile.classes == ("portrait", "tile") and profile.identity.startswith("mydata-")
    cfg = build_config(load_plan(TABLE3).row(1), on_profile(full_scale(tmp_path / "coco"), profile))
    train = cfg["train_dataloader"]["dataset"]
    assert train["metainfo"]["classes"] == ("portrait", "tile") and train["ann_file"] == "annotations/train.json"
    assert train["data_root"] == f"{tmp_path / 'data'}/"
    assert cfg["model"]["roi_head"]["bbox_head"]["num_classes"] == 2
    assert cfg["model"]["roi_head"]["mask_head"]["num_classes"] == 2
    assert cfg["val_evaluator"]["ann_file"] == f"{tmp_path / 'data'}/annotations/val.json"


@pytest.mark.slow
def test_a_profile_that_points_at_nothing_is_one_clear_error(cli, tmp_path):
    profile = make_dataset(tmp_path / "data")
    (tmp_path / "data" / "annotations" / "val.json").unlink()
    study = tmp_path / "s"
    result = cli("run", str(TABLE3), "--dataset", str(profile), "--study", str(study))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(profile) in result.stderr and "val.json is missing" in result.stderr, result.stderr
    assert not study.exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: coco2017\ntrain: {ann: a.json, images: i}\nval: {ann: a.json, images: i}\n")
    result = cli("run", str(TABLE3), "--dataset", str(bad), "--study", str(study), "--dry-run")
    assert result.returncode == 2 and "'name'" in result.stderr and "built-in" in result.stderr


@pytest.mark.training
def test_the_smoke_models_train_and_evaluate_on_the_users_data(cli, tmp_path):
    pytest.importorskip("mmcv._ext")
    profile = make_dataset(tmp_path / "data")
    plan = copy_plan(tmp_path, "sbr-cnn/table3", rows=[1])
    study = tmp_path / "s"
    args = ("run", str(plan), "--smoke", "--epochs", "1", "--dataset", str(profile), "--study", str(study))
    result = cli(*args, "--wait")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (row,) = cli_json("collect", "--study", str(study))
    assert row["state"] == "done" and "segm_AP" in row["metrics"] and row["verdict"] == "smoke"
    assert row["provenance"]["classes"] == ["portrait", "tile"]
    assert json.loads((study / "study.json").read_text())["dataset"] == "mydata"
    other = cli("run", str(plan), "--smoke", "--epochs", "1", "--study", str(study), "--dry-run")
    assert other.returncode == 2 and "trains on mydata, not shapes" in other.stderr


@pytest.mark.slow
def test_fig1_on_the_users_data(cli, tmp_path):
    profile = make_dataset(tmp_path / "data")
    out = tmp_path / "fig1"
    curves = cli_json("plot-anchors", "--dataset", str(profile), "--study", str(tmp_path / "s"), "--out", str(out))
    assert curves and all(label.startswith("mydata: ") and data["boxes"] == 12 for label, data in curves.items())
    assert out.with_suffix(".png").stat().st_size > 1000


@pytest.mark.slow
def test_bad_data_is_found_before_anything_is_submitted(cli, tmp_path):
    """`run` checks the profile's annotations and images first: a box outside its image is one
    message naming the file and the annotation, exit 2, and no study; `check-data` summarises good data."""
    profile = make_dataset(tmp_path / "data")
    summary = cli("check-data", str(profile), "--study", str(tmp_path / "unused"))
    assert summary.returncode == 0, summary.stderr
    assert "train: 6 images, 12 instances (portrait 6, tile 6), 0 empty" in summary.stdout
    ann = tmp_path / "data" / "annotations" / "val.json"
    coco = json.loads(ann.read_text())
    coco["annotations"][1]["bbox"][0] = 400.0
    ann.write_text(json.dumps(coco))
    study = tmp_path / "s"
    result = cli("run", str(TABLE3), "--smoke", "--dataset", str(profile), "--study", str(study))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert str(ann) in result.stderr and "annotation id 2" in result.stderr and "outside" in result.stderr
    assert not study.exists()
