#!/usr/bin/env bash
# The test suite, after the same set-up as everything else. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/ruff check sbrrepro tests benchmarks
.venv/bin/python -m pytest "$@"
