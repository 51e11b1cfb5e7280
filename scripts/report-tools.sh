#!/usr/bin/env bash
# What the report tests compile and view with, from Debian's packages (as root): pdflatex with
# booktabs and amssymb (texlive), and headless Chromium. sbrrepro itself needs neither; a user who
# compiles the generated .tex needs a LaTeX of their own. Installs only what is missing.
set -euo pipefail
need=()
command -v pdflatex >/dev/null || need+=(texlive-latex-base texlive-latex-recommended texlive-fonts-recommended)
command -v chromium >/dev/null || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then
    echo "report-tools.sh: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
