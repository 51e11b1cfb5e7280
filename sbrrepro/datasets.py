"""Dataset profiles: which annotation files, image folders and semantic maps a study trains,
validates and tests on, and what the data is (its identity, in every key).

Two are built in, of the same kind as a user's: `coco2017` (COCO under --data-root, its files named
after the recipe's splits) and `shapes` (the embedded synthetic dataset, which `sbrrepro.dataset`
generates in the study under the names given here). Any other COCO-format dataset is a YAML file;
its relative paths are taken from the file's own folder:

    name: mydata
    train: {ann: annotations/train.json, images: images/}
    val: {ann: annotations/val.json, images: images/}
    test: {ann: annotations/test_info.json, images: test/}          # optional: withheld annotations
    semantic: {train: maps/train/, classes: 12}                     # optional: semantic maps
    max_image_pixels: 400000000                                     # optional: images' largest size

Classes come from the training annotations' categories, in category-id order (any number, any ids,
any names); the generated configs take their class counts and the dataset's metainfo from them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .reader import ANNOTATION_BYTES, read_json, read_yaml
from .schema import Field, positive, validate

COCO = "coco2017"
SHAPES = "shapes"
BUILT_IN = (COCO, SHAPES)
ROLES = ("train", "val", "test")  # test: a split whose annotations are withheld (image information only)
# COCO 2017's split names by role, the recipes' defaults: its files are named after the split.
COCO_SPLITS = {"train": "train2017", "val": "val2017", "test": "test-dev2017"}


def built_in(smoke: bool) -> str:
    """The built-in dataset of a scale: COCO at full scale, the embedded one at smoke scale."""
    return SHAPES if smoke else COCO


@dataclass(frozen=True)
class SplitFiles:
    ann: str  # relative to the dataset's root
    images: str


@dataclass(frozen=True)
class DatasetProfile:
    """A dataset's files, relative to its root, by role ('train', 'val', 'test'), and what it is."""

    name: str
    root: Path
    identity: str  # what the data is, for keys: never where it lives
    splits: dict[str, SplitFiles]  # role -> its files
    classes: tuple[str, ...] | None = None  # None: COCO's 80, as MMDetection's CocoDataset names them
    semantic: dict[str, str] = field(default_factory=dict)  # role -> its semantic maps' folder
    semantic_classes: int | None = None  # the maps' labels; None: COCO-stuff's 183
    withheld: str | None = None  # the test split's ground truth, kept apart from what the jobs read
    # role -> its default split name, where '{split}' in the file names is the recipe's split (COCO);
    # empty: one split per role, whatever a recipe calls it
    split_names: dict[str, str] = field(default_factory=dict)
    max_image_pixels: int | None = None  # None: datacheck's bound
    source: Path | None = field(default=None, compare=False)  # a user's: the YAML file; None: built in

    def files(self, role: str, split: str | None = None) -> tuple[str, str]:
        """Annotation file and image folder of a role's split (`split`: the recipe's name of it)."""
        found = self.splits.get(role)
        if found is None:
            raise UserError(str(self.source or self.name), role, f"missing: a row of the plans evaluates on the "
                            f"{role} split (test-dev: its images without annotations)")
        return self._named(found.ann, role, split), self._named(found.images, role, split).rstrip("/") + "/"

    def semantic_maps(self, role: str, split: str | None = None) -> str:
        """The folder of a role's semantic segmentation maps (COCO-stuff's stuff and thing labels)."""
        found = self.semantic.get(role)
        if found is None:
            raise UserError(str(self.source or self.name), "semantic", "a row with a semantic branch needs the "
                            "training images' semantic maps: `semantic: {train: FOLDER, classes: N}`")
        return self._named(found, role, split).rstrip("/") + "/"

    def _named(self, path: str, role: str, split: str | None) -> str:
        if not self.split_names:  # a user's path is taken as written, braces and all
            return path
        return path.replace("{split}", split or self.split_names[role])


def coco(root: Path) -> DatasetProfile:
    """COCO 2017 under `root` as its archives unpack, COCO-stuff's maps (stuffthingmaps_trainval2017.zip)
    beside them."""
    instances = SplitFiles("annotations/instances_{split}.json", "{split}/")
    test_dev = SplitFiles("annotations/image_info_{split}.json", "test2017/")  # test-dev: a part of test2017
    maps = "stuffthingmaps/{split}/"
    return DatasetProfile(COCO, root, "coco", {"train": instances, "val": instances, "test": test_dev},
                          semantic={"train": maps, "val": maps}, split_names=COCO_SPLITS)


def embedded(root: Path) -> DatasetProfile:
    """The embedded dataset generated at `root`: laid out as COCO is, one split per role, the test
    split's annotations withheld as test-dev's are. Its identity is its folder's name, which carries
    the generator's settings."""
    from .dataset import CLASSES, SEMANTIC_CLASSES  # here: the generator imports this module for the names

    roles = ("train", "val")
    splits = {role: SplitFiles(f"annotations/instances_{role}.json", f"{role}/") for role in roles}
    splits["test"] = SplitFiles("annotations/image_info_test.json", "test/")
    return DatasetProfile(SHAPES, root, root.name, splits, CLASSES, {role: f"stuffthingmaps/{role}/" for role in roles},
                          SEMANTIC_CLASSES, withheld="withheld/instances_test.json")


def _safe_name(v: str) -> str | None:
    ok = v and all(c.isalnum() or c in "_-." for c in v) and v not in BUILT_IN
    return None if ok else f"{v!r}: letters, digits, '.', '_' and '-', and not a built-in name ({', '.join(BUILT_IN)})"


SPLIT_FIELDS = {"ann": Field(str, help="the COCO instances JSON"), "images": Field(str, help="the images' folder")}
SEMANTIC_FIELDS = {"train": Field(str, help="the training images' semantic maps (PNG per image stem)"),
                   "classes": Field(int, help="the maps' number of labels (255 is ignored)")}
PROFILE_FIELDS = {
    "name": Field(str, check=_safe_name, help="what the data is: it enters every training's key"),
    "train": Field(dict), "val": Field(dict), "test": Field(dict, None),
    "semantic": Field(dict, None),
    "max_image_pixels": Field(int, None, positive, "the largest image `check-data` accepts, in pixels by its "
                              "header (default: twice PIL's decompression-bomb limit, about 179 million)"),
}


def _identity(name: str, splits: dict[str, SplitFiles], classes: tuple[str, ...], maps: str | None,
              semantic_classes: int | None) -> str:
    """A user's data for keys: its name and a digest of its files' layout and classes (not its root)."""
    spec = json.dumps([{r: [s.ann, s.images] for r, s in splits.items()}, classes, maps, semantic_classes],
                      sort_keys=True)
    return f"{name}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


def _classes(path: Path, where: str) -> tuple[str, ...]:
    try:
        data = read_json(path, ANNOTATION_BYTES, "COCO instances JSON")
        categories = sorted(data["categories"], key=lambda c: c["id"])
        names = tuple(str(c["name"]) for c in categories)
    except OSError as e:
        raise UserError(where, "train.ann", f"cannot read {path}: {e.strerror}") from None
    except (KeyError, TypeError) as e:
        raise UserError(where, "train.ann", f"{path} is not COCO instances JSON with categories ({e})") from None
    if not names or len(set(names)) != len(names):
        raise UserError(str(path), "categories", f"needs at least one category and unique names, got {list(names)}")
    return names


def load_dataset(spec: str) -> DatasetProfile:
    """A dataset profile from its YAML file (built-in names are resolved by the caller)."""
    path = Path(spec)
    try:
        data = read_yaml(path, what="a YAML dataset profile")
    except OSError as e:
        raise UserError(spec, None, f"cannot read the dataset profile: {e.strerror}; pass a YAML file or one of "
                        f"{', '.join(BUILT_IN)}") from None
    where = str(path)
    top = validate(data, PROFILE_FIELDS, where)
    splits = {role: SplitFiles(**validate(top[role], SPLIT_FIELDS, where, f"{role}."))
              for role in ROLES if top[role] is not None}
    semantic = validate(top["semantic"], SEMANTIC_FIELDS, where, "semantic.") if top["semantic"] else None
    maps, semantic_classes = (semantic["train"], semantic["classes"]) if semantic else (None, None)
    root = path.resolve().parent
    classes = _classes(root / splits["train"].ann, where)
    return DatasetProfile(top["name"], root, _identity(top["name"], splits, classes, maps, semantic_classes), splits,
                          classes, {"train": maps} if maps else {}, semantic_classes,
                          max_image_pixels=top["max_image_pixels"], source=path)
