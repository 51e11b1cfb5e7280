"""The embedded synthetic dataset: COCO instances, COCO-stuff-style semantic maps and a withheld test split,
checked on real files with pycocotools."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from sbrrepro.dataset import CLASSES, SEMANTIC_CLASSES, STUFF, SyntheticSpec, ensure_dataset

N = len(CLASSES)
BORDER = 2


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return ensure_dataset(tmp_path_factory.mktemp("data"), SyntheticSpec())


def _coco(root: Path, split: str) -> COCO:
    return COCO(str(root / "annotations" / f"instances_{split}.json"))


def _map(root: Path, split: str, image: dict) -> np.ndarray:
    return cv2.imread(str(root / "stuffthingmaps" / split / image["file_name"]), cv2.IMREAD_UNCHANGED)


def test_constants():
    assert len(STUFF) >= 2 and len(set(STUFF)) == len(STUFF)
    assert len(CLASSES) + len(STUFF) == SEMANTIC_CLASSES == 5


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_image_has_a_label_map_of_its_shape_and_labels(root: Path, split: str):
    coco = _coco(root, split)
    assert len(coco.imgs) == getattr(SyntheticSpec(), f"{split}_images")
    for image in coco.imgs.values():
        img = cv2.imread(str(root / split / image["file_name"]))
        labels = _map(root, split, image)
        assert labels.dtype == np.uint8 and labels.ndim == 2
        assert labels.shape == img.shape[:2] == (image["height"], image["width"])
        assert set(np.unique(labels)) <= set(range(SEMANTIC_CLASSES)) | {255}
        interior = labels[BORDER:-BORDER, BORDER:-BORDER]
        assert not (interior == 255).any()  # ignore on the border only
        edge = np.ones(labels.shape, bool)
        edge[BORDER:-BORDER, BORDER:-BORDER] = False
        assert not ((labels >= N) & (labels != 255) & edge).any()  # no stuff label on the border
    assert sorted(p.name for p in (root / "stuffthingmaps" / split).iterdir()) == \
        sorted(im["file_name"] for im in coco.imgs.values())


@pytest.mark.parametrize("split", ["train", "val"])
def test_thing_pixels_are_the_annotation_masks(root: Path, split: str):
    coco = _coco(root, split)
    for image in coco.imgs.values():
        labels = _map(root, split, image)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        assert sum(m.astype(int) for m in masks).max(initial=0) <= 1  # objects never overlap
        for k, (ann, mask) in enumerate(zip(anns, masks)):
            others = np.zeros_like(mask)
            for j, m in enumerate(masks):
                if j != k:
                    others |= m
            drawn = (labels == ann["category_id"] - 1) & ~others
            iou = (mask & drawn).sum() / (mask | drawn).sum()
            assert iou >= 0.95, (split, image["id"], ann["id"], iou)
        union = np.any(masks, axis=0) if masks else np.zeros(labels.shape, bool)
        things = labels < N
        assert (things & ~union).sum() <= 0.01 * max(things.sum(), 1)  # no thing pixel outside the objects


def test_both_stuff_classes_occur_in_most_images(root: Path):
    for split in ("train", "val"):
        coco = _coco(root, split)
        both = [all((_map(root, split, im) == N + s).any() for s in range(len(STUFF))) for im in coco.imgs.values()]
        assert np.mean(both) >= 0.8, split


def _lag_correlation(grey: np.ndarray, region: np.ndarray) -> float:
    """Correlation of horizontally adjacent pixels that both lie in `region`: about 0 for white noise."""
    pair = region[:, :-1] & region[:, 1:]
    a, b = grey[:, :-1][pair], grey[:, 1:][pair]
    return float(np.corrcoef(a, b)[0, 1])


def test_the_stuff_textures_differ_in_the_images(root: Path):
    coco = _coco(root, "train")
    colours: dict[int, list[np.ndarray]] = {s: [] for s in range(len(STUFF))}
    correlations: dict[int, list[float]] = {s: [] for s in range(len(STUFF))}
    for image in coco.imgs.values():
        img = cv2.imread(str(root / "train" / image["file_name"]))
        labels = _map(root, "train", image)
        grey = img.astype(np.float64).mean(2)
        for s in range(len(STUFF)):
            region = labels == N + s
            if region.sum() > 200:
                colours[s].append(img[region].astype(np.float64))
                correlations[s].append(_lag_correlation(grey, region))
    means = [np.concatenate(colours[s]).mean(0) for s in range(len(STUFF))]
    assert np.abs(means[0] - means[1]).max() > 30  # another colour
    noise, stripes = np.median(correlations[0]), np.median(correlations[1])
    assert abs(noise) < 0.2 and stripes > 0.5, (noise, stripes)  # another texture: noise vs stripes


def test_most_images_hold_two_classes_of_every_size(root: Path):
    for split, at_least in (("train", 0.7), ("val", 0.6)):
        coco = _coco(root, split)
        distinct = [len({a["category_id"] for a in coco.imgToAnns[i]}) for i in coco.imgs]
        assert np.mean(np.array(distinct) >= 2) >= at_least, split
        areas = np.array([a["area"] for a in coco.anns.values()])
        # COCO's small, medium and large ranges all populated, in every split AP_s/AP_m/AP_l read
        assert (areas < 32**2).sum() and ((areas >= 32**2) & (areas < 96**2)).sum() and (areas >= 96**2).sum()
        assert set(coco.getCatIds()) == set(range(1, N + 1))
        assert {a["category_id"] for a in coco.anns.values()} == set(range(1, N + 1))


def test_the_test_split_withholds_its_annotations(root: Path):
    info = json.loads((root / "annotations" / "image_info_test.json").read_text())
    assert set(info) == {"info", "licenses", "images", "categories"}  # as COCO's image_info_test-dev2017.json
    assert len(info["images"]) == SyntheticSpec().test_images
    assert not (root / "stuffthingmaps" / "test").exists()
    assert not (root / "annotations" / "instances_test.json").exists()
    withheld = COCO(str(root / "withheld" / "instances_test.json"))
    assert sorted(withheld.imgs) == sorted(im["id"] for im in info["images"])
    assert {i: im["file_name"] for i, im in withheld.imgs.items()} == \
        {im["id"]: im["file_name"] for im in info["images"]}
    assert withheld.loadCats(withheld.getCatIds()) == info["categories"]
    assert len(withheld.anns) >= len(info["images"])
    for im in info["images"]:
        assert cv2.imread(str(root / "test" / im["file_name"])).shape[:2] == (im["height"], im["width"])
    # pycocotools reads the image-info file as CocoDataset does (per image: no annotations)
    info_api = COCO(str(root / "annotations" / "image_info_test.json"))
    assert info_api.getAnnIds(imgIds=sorted(info_api.imgs)) == []


def test_mmdetection_loads_the_splits_and_the_label_maps(root: Path):
    """The way a config uses them: the stuff maps through LoadAnnotations(with_seg=True), the test split
    through its image-info file in test mode."""
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations

    train = CocoDataset(data_root=str(root), ann_file="annotations/instances_train.json",
                        data_prefix=dict(img="train/", seg="stuffthingmaps/train/"), seg_map_suffix=".png",
                        metainfo=dict(classes=CLASSES), filter_cfg=dict(filter_empty_gt=True, min_size=4),
                        pipeline=[LoadImageFromFile(),
                                  LoadAnnotations(with_bbox=True, with_mask=True, with_seg=True)])
    sample = train[0]
    labels = _map(root, "train", {"file_name": Path(sample["img_path"]).name})
    assert (sample["gt_seg_map"] == labels).all() and sample["gt_seg_map"].shape == sample["img"].shape[:2]
    assert len(sample["gt_masks"]) == len(sample["gt_bboxes"]) > 0
    test = CocoDataset(data_root=str(root), ann_file="annotations/image_info_test.json",
                       data_prefix=dict(img="test/"), metainfo=dict(classes=CLASSES), test_mode=True,
                       pipeline=[LoadImageFromFile()])
    assert len(test) == SyntheticSpec().test_images
    assert test[0]["instances"] == [] and test[0]["img"].shape == (128, 128, 3)


@pytest.mark.slow
def test_the_same_seed_regenerates_the_same_files(root: Path, tmp_path: Path):
    again = ensure_dataset(tmp_path / "again", SyntheticSpec())
    assert again.name == root.name
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix == ".json" or rel.parts[0] == "stuffthingmaps":
            assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel
    assert [p.name for p in (tmp_path / "again").iterdir()] == [again.name]  # no temporary folder left
    other = ensure_dataset(tmp_path / "other", SyntheticSpec(seed=1))
    assert (other / "annotations" / "instances_train.json").read_bytes() != \
        (root / "annotations" / "instances_train.json").read_bytes()


def test_the_folder_names_the_layout_and_every_setting():
    spec = SyntheticSpec()
    assert spec.folder_name().startswith("shapes-v2-")  # never a folder of the first layout (no stuff maps)
    for change in ({"test_images": 3}, {"max_objects": 2}, {"seed": 5}, {"size": 96}):
        assert SyntheticSpec(**change).folder_name() != spec.folder_name()


def test_an_existing_dataset_is_reused(tmp_path: Path):
    spec = SyntheticSpec(train_images=2, val_images=1, test_images=1)
    first = ensure_dataset(tmp_path, spec)
    stamp = (first / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert ensure_dataset(tmp_path, spec) == first
    assert (first / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
