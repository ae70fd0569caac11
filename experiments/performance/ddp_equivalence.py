"""DDP equivalence: one Student trained by ``tsrl train`` in one process and with ``--ddp`` across two, compared.

    python -m experiments.performance.ddp_equivalence [--device cuda] [--backbone test_convnext --image-size 32] ...

Method: writes a config of the embedded benchmark at ``--image-size`` (``--repeats`` tutored epochs after one warm-up
epoch, the ``uniform`` and ``ppo`` Students, ``--deterministic`` kernels), runs ``tsrl train`` with it in one process,
then under ``torchrun --nproc_per_node=2`` with ``--ddp`` (gloo on the CPU, NCCL on two GPUs), and compares the two
run directories Student by Student: the largest difference of the saved weights, and of every number of the
per-epoch records and test metrics. The default backbone has no BatchNorm, whose per-shard statistics would differ by
design. The floating-point sums of an all-reduce over half batches differ in order from one process's, so the runs
agree up to rounding carried through training, not bit for bit. The verdict uses the test suite's CPU tolerances
(``tests/test_ddp.py``) for the metrics, and a weight tolerance ``--weight-tolerance`` (default 1e-3: on a GPU, cuDNN's
kernels for half batches round differently). Prints one table; exits 1 when a Student is outside them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from experiments.performance.common import add_common_arguments, env_settings, torchrun
from experiments.report import format_table

METRIC_TOLERANCE = 1 / 64
"""Per-epoch validation AUCs and test metrics: one of a 64-frame split's frames crossing a threshold."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.performance.ddp_equivalence", description=__doc__.split("\n\n")[0]
    )
    add_common_arguments(parser, train_size=256, repeats=1)
    parser.set_defaults(backbone="test_convnext", image_size=32, batch_size=32)
    parser.add_argument("--weight-tolerance", type=float, default=1e-3, help="largest weight difference (default: 1e-3)")
    return parser


def max_differences(first: object, second: object, path: str = "") -> dict[str, float]:
    """Largest absolute difference of the numbers of two records, by dotted field path (list items pooled); the other
    values must be equal (an AssertionError names the first that is not)."""
    if isinstance(first, dict):
        assert isinstance(second, dict) and first.keys() == second.keys(), path
        found: dict[str, float] = {}
        for key in first:
            for name, difference in max_differences(first[key], second[key], f"{path}.{key}" if path else key).items():
                found[name] = max(found.get(name, 0.0), difference)
        return found
    if isinstance(first, list):
        assert isinstance(second, list) and len(first) == len(second), path
        found = {}
        for a, b in zip(first, second, strict=True):
            for name, difference in max_differences(a, b, path).items():
                found[name] = max(found.get(name, 0.0), difference)
        return found
    if isinstance(first, bool) or not isinstance(first, (int, float)):
        assert first == second, path
        return {}
    both_nan = math.isnan(first) and math.isnan(second)
    return {path: 0.0 if both_nan else abs(first - second)}


def weight_difference(first: Path, second: Path) -> float:
    """Largest absolute difference between two saved Students' weights."""
    one = torch.load(first, map_location="cpu", weights_only=True)
    two = torch.load(second, map_location="cpu", weights_only=True)
    assert one.keys() == two.keys(), "the Students have different layers"
    return max(float((one[name].float() - two[name].float()).abs().max()) for name in one)


def _train(launcher: list[str], config: Path, out: Path, *extra: str) -> Path:
    command = [*launcher, "-m", "experiments.cli", "train", "--config", str(config), "--out", str(out), "--no-progress"]
    finished = subprocess.run([*command, "--deterministic", *extra], capture_output=True, text=True, env=_environment())
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{finished.stderr[-3000:]}")
    (run_dir,) = out.iterdir()
    return run_dir


def _environment() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }


def main(argv: list[str] | None = None) -> bool:
    """Run both trainings, print the comparison; True when every Student is within the tolerances."""
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        settings = {**env_settings(args, epochs=args.repeats), "warmup_epochs": 1}
        settings["dataset_options"] = {
            **settings["dataset_options"],
            "val_size": 64,
            "test_seen_size": 64,
            "test_unseen_size": 64,
        }
        config = root / "ddp_equivalence.yaml"
        config.write_text(yaml.safe_dump({"seed": args.seed, "tutor": "ppo", "env": settings}))
        single = _train([sys.executable], config, root / "one")
        distributed = _train(torchrun(), config, root / "two", "--ddp")
        rows, equivalent = [], True
        for label in ("uniform", "ppo"):
            one = json.loads((single / label / "run.json").read_text())
            two = json.loads((distributed / label / "run.json").read_text())
            metrics = max_differences(
                {"epochs": [e["val_auc"] for e in one["epochs"]], "test": one["test"]},
                {"epochs": [e["val_auc"] for e in two["epochs"]], "test": two["test"]},
            )
            worst_metric = max(metrics.values(), default=0.0)
            weights = weight_difference(single / label / "student.pt", distributed / label / "student.pt")
            within = worst_metric <= METRIC_TOLERANCE and weights <= args.weight_tolerance
            equivalent &= within
            rows.append([label, f"{weights:.2e}", f"{worst_metric:.4f}", "yes" if within else "NO"])
    print(f"one process vs two ({'NCCL' if args.device.startswith('cuda') else 'gloo'}), {args.backbone}, {args.image_size} px")
    print(format_table(["Student", "max weight difference", "max metric difference", "within tolerance"], rows))
    return equivalent


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
