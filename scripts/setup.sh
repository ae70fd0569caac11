#!/usr/bin/env bash
# Creates .venv and installs the project with its test tools. PyTorch comes first, pinned through
# TORCH_PACKAGES (default: the CPU-usable pair this project is tested with); set it to taste elsewhere,
# e.g. TORCH_PACKAGES="torch torchvision".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_PACKAGES="${TORCH_PACKAGES:-torch==2.14.1 torchvision==0.29.1}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet $TORCH_PACKAGES
.venv/bin/python -m pip install --quiet -e ".[dev]"
