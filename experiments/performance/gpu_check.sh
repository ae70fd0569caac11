#!/usr/bin/env bash
# GPU check, under 8 minutes on one GPU: the step-cost and throughput benches on CUDA, the host syncs of one update and
# one step; when two GPUs exist, the DDP communication bench and a one-vs-two-process equivalence check on NCCL; and one
# tutored epoch of the deepfakebench_reference preset (Xception, 256 px, bf16 autocast) on the embedded benchmark
# generated at 256 px; then one summary table (step, seconds, exit code, where its output is).
#
#   experiments/performance/gpu_check.sh                      # on the GPU machine, from the repository root
#   DEVICE=cpu SMALL=1 experiments/performance/gpu_check.sh   # a dry run of the script itself on a CPU (tiny sizes)
#
# Every step has its own time limit and the script goes on after a failed one; its output is under $OUT.
set -uo pipefail
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/gpu_check}
if [[ -n "${SMALL:-}" ]]; then
  BENCH=(--backbone test_resnet --image-size 32 --batch-size 16 --train-size 64 --repeats 1)
  PRESET=(backbone=test_resnet image_size=32 train_size=64 batch_size=16)
else
  BENCH=(--backbone legacy_xception --image-size 256 --batch-size 32 --train-size 512 --repeats 2)
  PRESET=(backbone=legacy_xception image_size=256 train_size=1024 batch_size=4)
fi
mkdir -p "$OUT"
rows=()

step() {  # step NAME LIMIT_S COMMAND...: run it with its output in $OUT/NAME.txt, and note its time and exit code
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  local code=$?
  rows+=("$(printf '%-16s %6ss  %-8s  %s' "$name" "$((SECONDS - start))" "$code" "$OUT/$name.txt")")
}

step step_cost 150 "$PYTHON" -m experiments.performance.step_cost --device "$DEVICE" "${BENCH[@]}" --variants tsrl ppo_tsrl
step throughput 90 "$PYTHON" -m experiments.performance.throughput --device "$DEVICE" "${BENCH[@]}"
gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
if [[ "$DEVICE" == cuda* ]]; then
  step host_syncs 60 "$PYTHON" -m experiments.performance.host_syncs --device "$DEVICE" "${BENCH[@]}" --precision bf16
else
  rows+=("$(printf '%-16s %s' host_syncs "skipped: counted on CUDA only")")
fi
if [[ "$DEVICE" == cuda* && "$gpus" -ge 2 ]]; then
  step ddp_nccl 90 "$PYTHON" -m experiments.performance.ddp_comm --processes 2 --device cuda "${BENCH[@]}"
  step ddp_equivalence 150 "$PYTHON" -m experiments.performance.ddp_equivalence --device cuda
else
  rows+=("$(printf '%-16s %s' ddp_nccl "skipped: $gpus CUDA device(s), two needed")")
  rows+=("$(printf '%-16s %s' ddp_equivalence "skipped: $gpus CUDA device(s), two needed")")
fi
"$PYTHON" - "$OUT/reference_256px.yaml" "${PRESET[@]}" <<'PY'
import sys
from pathlib import Path

import yaml

from experiments.config import read_yaml_config

path, *pairs = sys.argv[1:]
sizes = dict(pair.split("=") for pair in pairs)
config = read_yaml_config("deepfakebench_reference")
side, train = int(sizes["image_size"]), int(sizes["train_size"])
config["env"].update(
    dataset="embedded",
    dataset_options={"image_size": side, "train_size": train, "val_size": 256, "test_seen_size": 256, "test_unseen_size": 256},
    backbone=sizes["backbone"],
    pretrained=False,
    image_size=side,
    batch_size=int(sizes["batch_size"]),
)
Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
PY
step reference_epoch 200 "$PYTHON" -m experiments.cli train --config "$OUT/reference_256px.yaml" --device "$DEVICE" \
  --epochs 1 --warmup-epochs 0 --no-baseline --out "$OUT/runs" --no-progress

echo
printf '%-16s %7s  %-8s  %s\n' step time "exit" output
printf '%s\n' "${rows[@]}"
