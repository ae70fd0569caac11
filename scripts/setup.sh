#!/usr/bin/env bash
# Creates .venv and installs the project with its test tools. PyTorch comes first, pinned through
# TORCH_PACKAGES (default: the CPU-usable pair this project is tested with); set it to taste elsewhere,
# e.g. TORCH_PACKAGES="torch torchvision".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_PACKAGES="${TORCH_PACKAGES:-torch==2.14.1 torchvision==0.29.1}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "setup: installing $TORCH_PACKAGES into .venv (a few minutes; on Linux x86_64 pip's build carries the CUDA"
echo "       libraries, about 6.5 GB in all, used only where a GPU is; TORCH_PACKAGES chooses another build)"
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet $TORCH_PACKAGES
echo "setup: installing TSRL and its test tools"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "setup: done (.venv)"
