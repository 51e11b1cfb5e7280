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
from .files import atomic_write

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
            try:
                saved = json.loads(path.read_text())
            except ValueError:  # cut short by a full disk: rebuilt as it fills again
                saved = {}
            if saved.get("stamp") == self.stamp:
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
        if not path.exists() or digest(path.read_bytes()) != text_digest:
            return None
        self.hits += 1
        return path, key

    def remember(self, inputs: str | None, key: str, text: str) -> None:
        if inputs is not None and self.entries.get(inputs) != [key, digest(text)]:
            self.entries[inputs] = [key, digest(text)]
            self._changed = True

    def save(self) -> None:
        if self.path is not None and self._changed:
            atomic_write(self.path, json.dumps({"stamp": self.stamp, "entries": self.entries}))
            self._changed = False
