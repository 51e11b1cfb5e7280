"""The one reader of every structured file sbrrepro reads: plans and recipes, dataset and cluster
profiles, annotation JSON, the evaluation server's stats and the JSON files a study keeps.

A file must be a regular file, checked before it is opened (opening a FIFO blocks, a device may act on
being opened, and neither ends); it is read whole only up to a size bound; its bytes must be UTF-8 (a
leading BOM is dropped); YAML goes through the safe loader, libyaml's where PyYAML has it, with the
document's nesting and what its aliases add bounded on the composed node graph before any object is
built (an alias is its anchor's node there, so the graph is no larger than the file); JSON nested
beyond what Python's parser can recurse is refused. Each refusal is one `UserError` naming the file,
with line and column where known, and what was expected. The OS's own errors (a missing file, a
folder, no permission) are raised as `OSError`, for each caller to word for the file it wanted.

Only the standard library is imported here (jobs on compute nodes read their files through it);
PyYAML is imported at the first YAML file.
"""

from __future__ import annotations

import codecs
import errno
import functools
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UserError

MiB = 2**20
INPUT_BYTES = 10 * MiB  # the published numbers' CSV, the server's stats, users' URL tables: a few KB each
# Plans, recipes, dataset and cluster profiles (7 KB at most): PyYAML builds about half a MB a second on
# a loaded core, and a reader must answer within a second or so.
YAML_BYTES = MiB // 4
ANNOTATION_BYTES = 4 * 2**30  # COCO instances JSON: COCO's largest, train2017's, is 448 MB
STUDY_BYTES = 256 * MiB  # JSON a study, its jobs or MMEngine wrote: the largest, a training's scalars.json, some MB
MAX_DEPTH = 100  # YAML nesting: the repository's plans and profiles nest 6 levels at most
MAX_ALIAS_SIZE = 1_000_000  # nodes and scalar characters that a YAML document's aliases may add, written out

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _error(where: str, message: str, what: str | None) -> UserError:
    return UserError(where, None, message + (f"; expected {what}" if what else ""))


def _check(path: Path, st: os.stat_result, limit: int, what: str | None) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "a special file")
        raise _error(str(path), f"is {kind}, not a regular file", what)
    if st.st_size > limit:
        raise _error(str(path), f"is {st.st_size:,} bytes, more than the {limit:,} ({limit / MiB:g} MiB) sbrrepro "
                     "reads of such a file", what)


def read_bytes(path: Path, limit: int, what: str | None = None) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them. `what`: what the file should be
    (e.g. 'a YAML plan'), for the messages."""
    if "\0" in str(path):  # the OS takes no such name: os.stat would raise ValueError
        raise _error(str(path), "has a NUL character in its name", what)
    _check(path, os.stat(path), limit, what)
    # O_NONBLOCK: a FIFO put in its place since the stat is refused below rather than waited on
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        _check(path, st, limit, what)
        return f.read(st.st_size)  # the size it had when opened: a file that grows meanwhile stays bounded


def _decode(data: bytes, where: str, what: str | None) -> str:
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return str(memoryview(data)[skip:], "utf-8")  # a view: a large file is not copied to drop its BOM
    except UnicodeDecodeError as e:
        at = skip + e.start
        raise _error(where, f"is not UTF-8 text: byte 0x{data[at]:02x} at {_position(data, at)} (byte {at:,})",
                     what) from None


def _position(text: str | bytes, at: int) -> str:
    """Where offset `at` of `text` is, as 'line L, column C'."""
    newline = b"\n" if isinstance(text, bytes) else "\n"
    return f"line {text.count(newline, 0, at) + 1}, column {at - text.rfind(newline, 0, at)}"


def read_text(path: Path, limit: int, what: str | None = None) -> str:
    """The UTF-8 text of `path` (see `read_bytes`)."""
    return _decode(read_bytes(path, limit, what), str(path), what)


def parse_json(data: str | bytes, where: str, what: str | None = None,
               object_hook: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """JSON in memory (bytes: UTF-8); errors name `where`."""
    text = _decode(data, where, what) if isinstance(data, bytes) else data
    del data  # the bytes freed before parsing: a large file is in memory once as text, then as objects
    try:
        return json.loads(text, object_hook=object_hook)
    except json.JSONDecodeError as e:
        raise _error(where, f"not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}", what) from None
    except RecursionError:
        raise _error(where, f"nested deeper than Python's JSON parser goes (about {sys.getrecursionlimit():,} "
                     "levels)", what) from None
    except ValueError as e:  # an integer of more digits than Python converts (4,300)
        raise _error(where, f"a value Python's JSON parser cannot build: {e}", what) from None


def read_json(path: Path, limit: int = STUDY_BYTES, what: str | None = None,
              object_hook: Callable[[dict[str, Any]], Any] | None = None) -> Any:
    """The JSON document of `path`, at most `limit` bytes."""
    return parse_json(read_bytes(path, limit, what), str(path), what, object_hook)


class _Refused(Exception):
    """A YAML document over a bound (the message says which, and where)."""


def _at(mark: Any) -> str:
    return f"(line {mark.line + 1}, column {mark.column + 1})"


def _bound(root: Any) -> None:
    """Refuse a composed YAML document nested deeper than MAX_DEPTH, whose aliases add more than
    MAX_ALIAS_SIZE, or that holds an alias of a node around it (a recursive structure). One pass over
    the graph's distinct nodes, each node's size and height computed once; iterative, for any depth."""
    size: dict[int, int] = {}  # a node's size written out: its nodes, plus its scalars' characters
    height: dict[int, int] = {}
    around: set[int] = set()  # the nodes the walk is inside
    added = 0
    stack: list[tuple[Any, Any, int, bool]] = [(root, root, 1, False)]  # node, parent, depth, children done
    while stack:
        node, parent, depth, done = stack.pop()
        key = id(node)
        if done:
            around.discard(key)
            children = _children(node)
            size[key] = 1 + (len(node.value) if node.id == "scalar" else sum(size[id(n)] for n in children))
            height[key] = 1 + max((height[id(n)] for n in children), default=0)
        elif key in size:  # an alias: its node, built once, written out again at each use
            added += size[key]
            if added > MAX_ALIAS_SIZE:
                raise _Refused(f"its aliases add more than {MAX_ALIAS_SIZE:,} nodes and characters, written out "
                               f"{_at(parent.start_mark)}: aliases may repeat parts of a file, not multiply it")
            if depth + height[key] - 1 > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels, an alias written out {_at(parent.start_mark)}")
        elif key in around:
            raise _Refused(f"an alias inside its own anchor {_at(parent.start_mark)}: it never ends")
        elif depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels {_at(node.start_mark)}")
        else:
            around.add(key)
            stack.append((node, parent, depth, True))
            stack.extend((n, node, depth + 1, False) for n in reversed(_children(node)))


def _children(node: Any) -> list[Any]:
    if node.id == "mapping":
        return [n for pair in node.value for n in pair]
    return node.value if node.id == "sequence" else []


@functools.cache
def _loader() -> type:
    import yaml

    class Bounded(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's: ten times quicker over the plans
        def construct_document(self, node: Any) -> Any:
            _bound(node)
            return super().construct_document(node)

    return Bounded


def read_yaml(path: Path, limit: int = YAML_BYTES, what: str | None = None) -> Any:
    """The YAML document of `path`, read safely (no tag builds anything but plain data), at most
    `limit` bytes, nested at most MAX_DEPTH levels, its aliases adding at most MAX_ALIAS_SIZE."""
    import yaml

    text = read_text(path, limit, what)
    try:
        return yaml.load(text, Loader=_loader())
    except yaml.reader.ReaderError as e:  # a character YAML refuses; its own message is two lines, at an offset
        at = text.find(chr(e.character))  # the first: YAML refuses such a character wherever it is
        raise _error(str(path), f"not valid YAML ({_position(text, at)}): character U+{e.character:04X}: "
                     f"{e.reason}", what) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" {_at(mark)}" if mark else ""
        raise _error(str(path), f"not valid YAML{at}: {getattr(e, 'problem', None) or e}", what) from None
    except _Refused as e:
        raise _error(str(path), str(e), what) from None
    except RecursionError:  # PyYAML's own composer, without libyaml, recurses per level
        raise _error(str(path), f"nested deeper than {MAX_DEPTH} levels", what) from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts (4,300)
        raise _error(str(path), f"a value PyYAML cannot build: {e}", what) from None
