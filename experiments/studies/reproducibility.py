"""What "reproduced" means: one benchmark cell rerun under each CPU kernel setting that can differ between machines.

A Student's result repeats bit for bit for the same seed, the same number of torch threads and the same CPU
kernels. Two things change the kernels without any change of ours: the thread count (each thread sums its share
of a convolution in its own order) and the CPU's instruction set, by which oneDNN (convolutions) and MKL (matrix
products) pick their code paths; a machine of the same nominal kind can have another CPU model. Capping both
libraries at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2``) is meant to make them take the code path every AVX2
machine has, at some cost in speed; between the two machines measured so far it did not give the same bits
(``experiments/results/reproducibility/README.md``).

    python -m experiments.studies.reproducibility --config benchmark_paired --variant noise_0.30 --tutor uniform --seed 0

reruns the cell under each setting of :data:`SETTINGS` (twice under the first, to show that a repeat is exact) in
fresh processes, and prints each run's test metrics, a digest of the Student's weights and the spread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.records.provenance import KERNEL_VARIABLES, numeric_environment

# (label, torch threads, environment) of each rerun; the environment must be set before torch is imported.
SETTINGS: tuple[tuple[str, int, dict[str, str]], ...] = (
    ("1 thread", 1, {}),
    ("1 thread, again", 1, {}),
    ("2 threads", 2, {}),
    ("1 thread, oneDNN capped at AVX2", 1, {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("1 thread, MKL capped at AVX2", 1, {"MKL_CBWR": "AVX2"}),
    ("1 thread, both capped at AVX2", 1, {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}),
)
REPORTED = ("test_seen_auc", "test_unseen_auc", "test_seen_video_auc", "test_unseen_video_auc")


def run_cell(config_name: str, variant: str, tutor: str, seed: int) -> dict[str, Any]:
    """Train one cell in this process and return its test metrics, weight digest and numeric environment."""
    import torch

    from experiments.grid.spec import load_benchmark_config
    from experiments.training.student import train_student

    config = load_benchmark_config(config_name).run_config(variant, tutor, seed)
    with tempfile.TemporaryDirectory() as out:
        run = train_student(config, Path(out), progress=False)
        state = torch.load(Path(out) / tutor / "student.pt", weights_only=True)
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].cpu().contiguous().numpy().tobytes())
    metrics = {f"{split}_{metric}": run.test[split][metric] for split in run.test for metric in ("auc", "video_auc")}
    return {"metrics": metrics, "weights_sha256": digest.hexdigest(), "environment": numeric_environment()}


def rerun_under_every_setting(config_name: str, variant: str, tutor: str, seed: int) -> list[dict[str, Any]]:
    results = []
    for label, threads, variables in SETTINGS:
        environment = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES} | variables
        command = [sys.executable, "-m", "experiments.studies.reproducibility", "--one-cell", "--threads", str(threads)]
        command += ["--config", config_name, "--variant", variant, "--tutor", tutor, "--seed", str(seed)]
        start = time.perf_counter()
        output = subprocess.run(command, env=environment, check=True, capture_output=True, text=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        results.append({"setting": label, "wall_time_s": time.perf_counter() - start, **result})
        print(f"{label}: {result['metrics']} weights {result['weights_sha256'][:12]}", file=sys.stderr, flush=True)
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    metrics = [m for m in REPORTED if m in results[0]["metrics"]]
    lines = ["| setting | " + " | ".join(metrics) + " | weights (SHA-256) | wall time |", "|" + " --- |" * (len(metrics) + 3)]
    for result in results:
        values = " | ".join(f"{result['metrics'][m]:.4f}" for m in metrics)
        lines.append(f"| {result['setting']} | {values} | {result['weights_sha256'][:12]} | {result['wall_time_s']:.0f} s |")
    spreads = " | ".join(f"{max(r['metrics'][m] for r in results) - min(r['metrics'][m] for r in results):.4f}" for m in metrics)
    lines.append(f"| spread (max − min) | {spreads} | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="benchmark_paired", help="benchmark config (default: benchmark_paired)")
    parser.add_argument("--variant", default="noise_0.30", help="variant of the config (default: noise_0.30)")
    parser.add_argument("--tutor", default="uniform", help="tutor of the cell (default: uniform)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cell (default: 0)")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--one-cell", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_cell:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_cell(args.config, args.variant, args.tutor, args.seed)))
        return
    results = rerun_under_every_setting(args.config, args.variant, args.tutor, args.seed)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
