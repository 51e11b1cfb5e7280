"""Writing files so that a crash or a kill never leaves one half-written."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:  # a full disk, a folder in the way: no half-written file left beside it
        tmp.unlink(missing_ok=True)
        raise
