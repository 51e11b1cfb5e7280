"""What sbrrepro and its stack are: library versions, the project's commit and a digest of its own
source. A run's provenance, `sbrrepro --version` and the config cache's validity all read them here.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
STACK = ("sbrrepro", "torch", "mmcv", "mmdet", "mmengine", "numpy", "pycocotools", "submitit", "tensorboard")


def installed(name: str) -> str | None:
    """A distribution's version, None where it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def stack() -> dict[str, str | None]:
    return {name: installed(name) for name in STACK}


def commit() -> str | None:
    """`git describe` of sbrrepro's checkout; None where there is no git (a compute node may have
    none) or no checkout (an installed copy)."""
    git = shutil.which("git")
    if not git:
        return None
    done = subprocess.run([git, "-C", str(PACKAGE), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return done.stdout.strip() or None


def source_digest() -> str:
    """A hash of every Python file of the package: what sbrrepro's code is, checkout or not."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
