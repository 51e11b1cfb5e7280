#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the pinned stack of constraints.txt.
# On a ready machine it returns in seconds (a stamp records what was installed).
#
#   bash scripts/setup.sh                             # mmcv's ops for this machine (CUDA ones with nvcc and a GPU)
#   bash scripts/setup.sh --cuda-arch "7.0;8.0;9.0"   # mmcv's CUDA ops for these GPUs, built where none is
#                                                     # visible (a login node); needs nvcc
# A CUDA build stays one: a later plain run keeps it, and rebuilds it for the same GPUs where it must.
set -euo pipefail

need_nvcc() {  # need_nvcc WHAT: one line and exit 2 where nvcc is not on PATH
    command -v nvcc >/dev/null 2>&1 && return
    echo "setup: $1 needs nvcc, the CUDA compiler, which is not on PATH: load the CUDA toolkit (e.g. \`module load cuda\`)" >&2
    exit 2
}

cuda_arch=""
if [ $# -gt 0 ]; then
    if [ $# -ne 2 ] || [ "$1" != --cuda-arch ]; then
        echo "usage: bash scripts/setup.sh [--cuda-arch \"7.0;8.0;9.0\"]" >&2
        exit 2
    fi
    cap='([0-9]+\.[0-9]+a?|[A-Z][a-z]+)(\+PTX)?'  # as TORCH_CUDA_ARCH_LIST takes them: 9.0, 9.0a, 8.6+PTX, Hopper
    if ! [[ $2 =~ ^$cap([\;\ ]$cap)*$ ]]; then
        echo "setup: --cuda-arch '$2': give compute capabilities as TORCH_CUDA_ARCH_LIST takes them, e.g. \"7.0;8.0;9.0\"" >&2
        exit 2
    fi
    need_nvcc "--cuda-arch (mmcv's CUDA ops)"
    cuda_arch=$2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="$venv/bin/python"
stamp="$venv/.sbrrepro-stamp"
want="$(cat "$root/constraints.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
# The compute capabilities of the CUDA ops a --cuda-arch run built and checked (no file: none). A plain
# run builds for them too where it must rebuild mmcv, so that it never replaces them with CPU-only ops.
arch_stamp="$venv/.sbrrepro-cuda-arch"
built_arch="$(cat "$arch_stamp" 2>/dev/null || true)"
arch="${cuda_arch:-$built_arch}"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ "$arch" = "$built_arch" ] \
        && "$py" -c "import mmcv._ext, sbrrepro" 2>/dev/null; then
    exit 0
fi

[ -x "$py" ] || python3 -m venv "$venv"
pip=("$py" -m pip install --quiet -c "$root/constraints.txt")
# torch first and alone: any later unpinned torch requirement would pull a CUDA build.
"${pip[@]}" torch setuptools wheel ninja psutil numpy

cuda_mmcv() {  # cuda_mmcv ARCHS: mmcv with CUDA ops for these compute capabilities, no GPU needed
    need_nvcc "building mmcv's CUDA ops for $1 (as --cuda-arch did; \`rm $arch_stamp\` builds CPU ops instead)"
    if ! "$py" -c "import sys, torch; sys.exit(torch.version.cuda is None)"; then
        echo "setup: torch $("$py" -c 'import torch; print(torch.__version__)') is a CPU-only build, and mmcv's CUDA ops need torch's CUDA build: install torch==2.13.0 from an index with CUDA wheels (PyPI's default)" >&2
        exit 2
    fi
    echo "setup: building mmcv 2.1.0 with its CUDA ops for compute capabilities $1 (from source: tens of minutes on 2 cores)" >&2
    local wheels
    wheels="$(mktemp -d)"
    trap "rm -rf '$wheels'" EXIT  # expanded now: the local is gone when the script exits
    # Built apart first, so that a failed build leaves the installed mmcv as it was; --no-cache-dir and
    # --no-binary, so that no CPU-only wheel of an earlier set-up is reused.
    MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$1" MAX_JOBS="${MAX_JOBS:-2}" "$py" -m pip wheel --quiet \
        -c "$root/constraints.txt" --no-deps --no-build-isolation --no-cache-dir --no-binary mmcv -w "$wheels" mmcv
    "$py" -m pip uninstall --quiet -y mmcv 2>/dev/null || true
    "${pip[@]}" --no-cache-dir "$wheels"/mmcv-*.whl
    # Without a GPU the kernels cannot run: check that the extension was compiled with CUDA and holds them.
    "$py" - <<'EOF'
import mmap
import sys

import mmcv._ext as ext
from mmcv.ops import RoIAlign, nms  # their extension loads

cuda = ext.get_compiling_cuda_version()  # "not available" where built without CUDA
with open(ext.__file__, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as so:
    kernels = so.find(b"roi_align_forward_cuda") >= 0  # RoIAlign's CUDA implementation, absent from CPU builds
if not hasattr(ext, "roi_align_forward") or "not available" in cuda or not kernels:
    sys.exit(f"setup: {ext.__file__} has no CUDA ops (compiled with CUDA: {cuda}; RoIAlign's CUDA kernel: {kernels})")
print(f"setup: mmcv's ops built with CUDA {cuda}", file=sys.stderr)
EOF
    echo "$1" > "$arch_stamp"
}

if [ -n "$arch" ]; then
    if [ "$arch" != "$built_arch" ] || ! "$py" -c "import mmcv._ext" 2>/dev/null; then
        cuda_mmcv "$arch"
    fi
elif ! "$py" -c "import mmcv._ext" 2>/dev/null; then
    # mmcv 2.1.0 has no wheel: build it with its compiled ops against the installed torch
    # (--no-build-isolation, or the build silently skips the ops). pip caches the wheel.
    echo "setup: installing mmcv 2.1.0 with its ops (built from source once per machine: about 10 minutes on 2 cores)" >&2
    if command -v nvcc >/dev/null 2>&1 && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        export MMCV_WITH_OPS=1 FORCE_CUDA=1
    fi
    "$py" -m pip uninstall --quiet -y mmcv 2>/dev/null || true
    MAX_JOBS="${MAX_JOBS:-2}" "${pip[@]}" --no-build-isolation mmcv
    "$py" -c "from mmcv.ops import RoIAlign, nms"
fi

"${pip[@]}" -e "$root[test]"
echo "$want" > "$stamp"
