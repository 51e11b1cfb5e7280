from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TABLE3 = REPO / "plans" / "table3.yaml"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real command line, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "sbrrepro", *args], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
