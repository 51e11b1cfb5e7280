#!/usr/bin/env bash
# The test suite, after the same set-up as everything else: ruff, then the fast tier (every test that
# needs no training, SLURM, LaTeX or browser; about a minute), then the rest. Extra arguments go to
# pytest, both times; a tier that they leave without tests (pytest's status 5) is no failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/ruff check sbrrepro tests benchmarks
for tier in fast rest; do
    .venv/bin/python -m pytest --tier "$tier" "$@" || [ $? -eq 5 ]
done
