#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the pinned stack of constraints.txt.
# On a ready machine it returns in seconds (a stamp records what was installed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="$venv/bin/python"
stamp="$venv/.sbrrepro-stamp"
want="$(cat "$root/constraints.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c "import mmcv._ext, sbrrepro" 2>/dev/null; then
    exit 0
fi

[ -x "$py" ] || python3 -m venv "$venv"
pip=("$py" -m pip install --quiet -c "$root/constraints.txt")
# torch first and alone: any later unpinned torch requirement would pull a CUDA build.
"${pip[@]}" torch setuptools wheel ninja psutil numpy

if ! "$py" -c "import mmcv._ext" 2>/dev/null; then
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
