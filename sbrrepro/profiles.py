"""Dataset profiles: which annotation files and image folders a study trains, validates and tests on.

Two are built in: `coco2017` (COCO under --data-root, its splits named by the plan's recipe) and
`shapes` (the embedded synthetic dataset, generated in the study). Any other COCO-format dataset is
a YAML file; its relative paths are taken from the file's own folder:

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

BUILT_IN = ("coco2017", "shapes")


def built_in(smoke: bool) -> str:
    """The built-in dataset of a scale: COCO at full scale, the embedded one at smoke scale."""
    return "shapes" if smoke else "coco2017"
ROLES = ("train", "val", "test")


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


@dataclass(frozen=True)
class SplitFiles:
    ann: str  # relative to the profile's root
    images: str


@dataclass(frozen=True)
class Profile:
    name: str
    root: Path
    splits: dict[str, SplitFiles]  # role ('train', 'val', optionally 'test') -> its files
    classes: tuple[str, ...]
    semantic_maps: str | None = None
    semantic_classes: int | None = None
    source: Path | None = field(default=None, compare=False)  # the YAML file
    max_image_pixels: int | None = None  # None: datacheck's bound

    @property
    def identity(self) -> str:
        """What the data is, for keys: its name and a digest of its files' layout and classes."""
        spec = json.dumps([{r: [s.ann, s.images] for r, s in self.splits.items()}, self.classes, self.semantic_maps,
                           self.semantic_classes], sort_keys=True)
        return f"{self.name}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


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


def load_profile(spec: str) -> Profile:
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
    root = path.resolve().parent
    return Profile(top["name"], root, splits, _classes(root / splits["train"].ann, where),
                   semantic["train"] if semantic else None, semantic["classes"] if semantic else None, path,
                   top["max_image_pixels"])
