#!/usr/bin/env bash
# The main job on the embedded default: SBR-CNN Table 3 and Fig. 3, scaled down, trained and
# evaluated for real on this machine's CPU (or GPUs), then tabulated, plotted and reported.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
sbrrepro run plans/sbr-cnn/table3.yaml plans/sbr-cnn/fig3.yaml --smoke --wait
sbrrepro report    # collect (tables, figures, results), then one HTML and one Markdown page
