"""scripts/setup.sh --cuda-arch: refused in one line without nvcc, before it touches anything; and a
CUDA build of mmcv's ops survives later plain runs (the pip calls, seen through a stand-in venv)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.helpers import REPO

SETUP = REPO / "scripts" / "setup.sh"


def _path_without_nvcc() -> str:
    return os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "nvcc").exists())


def _setup(*args: str, root: Path = REPO, path: str | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(root / "scripts" / "setup.sh"), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PATH": path or _path_without_nvcc(), **env})


def _venv_state() -> dict[str, int]:
    venv = REPO / ".venv"
    mmcv = (venv / "lib").glob("python*/site-packages/mmcv*")
    return {p.name: p.stat().st_mtime_ns for p in [*venv.iterdir(), *mmcv]}


def test_without_nvcc_cuda_arch_is_one_line_and_changes_nothing():
    before = _venv_state()
    result = _setup("--cuda-arch", "9.0")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "nvcc" in result.stderr, result.stderr
    assert _venv_state() == before


# Stands in for the venv's python: logs each call with the build's variables; `import mmcv._ext` fails
# where EXT_BROKEN is set (torch changed under the built ops); `pip wheel` leaves a wheel.
FAKE_PYTHON = """#!/bin/sh
echo "$* FORCE_CUDA=${FORCE_CUDA:-} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-}" >> "$LOG"
case "$*" in
    *"import mmcv._ext"*) exit "${EXT_BROKEN:-0}" ;;
    *"pip wheel"*) for a in "$@"; do [ "${prev:-}" = -w ] && touch "$a/mmcv-2.1.0-py3-none-any.whl"; prev=$a; done ;;
esac
"""


def test_a_cuda_build_survives_plain_runs(tmp_path):
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, root / "scripts")
    for name in ("constraints.txt", "pyproject.toml"):
        shutil.copy(REPO / name, root)
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "nvcc").write_text("#!/bin/sh\n")
    (tools / "nvcc").chmod(0o755)
    with_nvcc = f"{tools}{os.pathsep}{_path_without_nvcc()}"
    log = tmp_path / "calls"

    def calls(*args: str, path: str = with_nvcc, **env: str) -> tuple[int, list[str]]:
        log.write_text("")
        result = _setup(*args, root=root, path=path, LOG=str(log), **env)
        return result.returncode, log.read_text().splitlines()

    code, done = calls("--cuda-arch", "8.0;9.0")
    wheel = [c for c in done if "pip wheel" in c]
    assert code == 0 and len(wheel) == 1, done
    assert "--no-cache-dir" in wheel[0] and "--no-binary mmcv" in wheel[0]
    assert wheel[0].endswith("FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=8.0;9.0")
    assert (root / ".venv" / ".sbrrepro-cuda-arch").read_text() == "8.0;9.0\n"
    code, done = calls()  # a plain run on the ready venv: nothing to do
    assert code == 0 and len(done) == 1 and "import mmcv._ext, sbrrepro" in done[0], done
    code, done = calls("--cuda-arch", "8.0;9.0")  # the same build asked again: nothing to do
    assert code == 0 and len(done) == 1, done
    # the stack changed and the ops no longer load: a plain run rebuilds them for the same GPUs
    (root / "constraints.txt").write_text((root / "constraints.txt").read_text() + "# changed\n")
    code, done = calls(EXT_BROKEN="1")
    assert code == 0 and [c.rsplit(" ", 1)[1] for c in done if "pip wheel" in c] == ["TORCH_CUDA_ARCH_LIST=8.0;9.0"]
    assert not any("--no-build-isolation mmcv" in c and "pip install" in c for c in done), done  # no CPU build
    # ... and says so in one line where nvcc is gone, rather than build CPU-only ops
    (root / "constraints.txt").write_text((root / "constraints.txt").read_text() + "# changed again\n")
    log.write_text("")
    result = _setup(root=root, LOG=str(log), EXT_BROKEN="1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "nvcc" in result.stderr, result.stderr
    assert "pip uninstall" not in log.read_text()
