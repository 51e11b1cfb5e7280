"""The configs a study has written, by what each was built from, so that `run` again on the same
plans builds and formats nothing (a row's config costs milliseconds to build from MMDetection's
shipped configs and more to lay out; a paper's plans hold hundreds).

An entry maps the digest of a row's inputs (the row as its plan gives it, the scale, the plan's
name and which config) to the row's key and the digest of the text written for it. It counts only
while the file on disk still has that text, and the whole cache only for the sbrrepro source and
MMDetection version that filled it: a change to either starts it afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import versions
from .errors import UserError
from .files import atomic_write
from .reader import STUDY_BYTES, read_bytes, read_json
from .study_files import KEY, Text, problem

# {"stamp": what filled it, "entries": {digest of a row's inputs: [its key, digest of its config's text]}}
_SHAPE = {"stamp": str, "entries": {str: [KEY, Text("[0-9a-f]{64}", "a SHA-256 digest")]}}

if TYPE_CHECKING:
    from .configs import Scale
    from .plan import Row


def digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def _reads_a_file(options: dict[str, Any]) -> bool:
    """Whether a row's options name a file of the user's (a `base` config): its content, and the files
    it includes, are not in the inputs, so such a row is built every time."""
    return any(isinstance(v, str) and v.startswith("/") and Path(v).is_file() for v in options.values())


class ConfigCache:
    def __init__(self, path: Path | None) -> None:
        """`path`: the study's cache file; None: a cache that remembers nothing (every row built)."""
        self.path = path
        self.entries: dict[str, list[str]] = {}
        self.hits = 0
        self._changed = False
        if path is None:
            return
        self.stamp = f"sbrrepro {versions.source_digest()}; mmdet {versions.installed('mmdet')}"
        if path.exists():
            # Only a cache: one that cannot be read (cut short by a full disk, a folder in its place) or is
            # not of its shape (edited by hand) is ignored, every row built, and it is written afresh.
            try:
                saved = read_json(path)
            except (OSError, UserError):
                saved = None
            if problem(saved, _SHAPE) is None and saved["stamp"] == self.stamp:
                self.entries = saved["entries"]

    def inputs(self, plan: str, row: Row, scale: Scale, what: str) -> str | None:
        """The digest of what a config is built from; None where that is not all of it."""
        if self.path is None or _reads_a_file(row.options):
            return None
        return digest(json.dumps([plan, what, dataclasses.asdict(row), repr(scale)], sort_keys=True, default=str))

    def lookup(self, inputs: str | None, path_of: Callable[[str], Path]) -> tuple[Path, str] | None:
        """(config file, key) where the entry's file still holds the text it was written with;
        `path_of(key)` is where that key's config lives."""
        if inputs is None or inputs not in self.entries:
            return None
        key, text_digest = self.entries[inputs]
        path = path_of(key)
        try:
            if digest(read_bytes(path, STUDY_BYTES)) != text_digest:
                return None
        except (OSError, UserError):  # gone, or not a file: built again
            return None
        self.hits += 1
        return path, key

    def remember(self, inputs: str | None, key: str, text: str) -> None:
        if inputs is not None and self.entries.get(inputs) != [key, digest(text)]:
            self.entries[inputs] = [key, digest(text)]
            self._changed = True

    def save(self) -> None:
        if self.path is not None and self._changed:
            try:
                atomic_write(self.path, json.dumps({"stamp": self.stamp, "entries": self.entries}))
            except OSError:  # a folder in its place: the configs are written, only not remembered
                return
            self._changed = False
