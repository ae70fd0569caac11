"""``tsrl export``: a grid's evaluation dataset written in DeepfakeBench's layout (:mod:`tsrl_env.data.export`), so
that a grid can read the same images through the ``deepfakebench`` source, with flips the loader draws."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.config import config_names
from experiments.grid.spec import load_benchmark_config
from experiments.preflight import writable_directory
from tsrl_env.data import make_dataset
from tsrl_env.data.export import export_deepfakebench


def add_arguments(parser: argparse.ArgumentParser) -> None:
    grids = ", ".join(config_names("benchmark"))
    parser.add_argument("--config", required=True, help=f"a benchmark config, a YAML path or one of: {grids}")
    parser.add_argument("--dataset", help="one of the grid's datasets (default: its first, or its only data)")
    parser.add_argument("--out", required=True, help="output folder: rgb/, dataset_json/ and dataset_options.yaml")


def run(args: argparse.Namespace) -> None:
    config = load_benchmark_config(args.config)
    dataset = args.dataset or next(iter(config.datasets), None)
    if dataset is not None and dataset not in config.datasets:
        raise SystemExit(f"the grid {args.config!r} has no dataset {dataset!r}; it has {', '.join(config.datasets)}")
    variant = config.cell_variants[0] if dataset is None else f"{config.cell_variants[0].partition('/')[0]}/{dataset}"
    env = config.run_config(variant, config.tutors[0], config.seeds[0]).env
    if env.dataset != "embedded":
        raise SystemExit(
            f"the grid {args.config!r} reads {env.dataset!r} data, already on disk; export is for the embedded benchmark"
        )
    # The true labels are written; a grid reading the files draws its own flips (deepfakebench's label_noise).
    data = make_dataset(env.dataset, **{**env.dataset_options, "label_noise": 0.0})
    options = export_deepfakebench(data, writable_directory(Path(args.out)))
    print(f"wrote {sum(len(split) for split in data.splits.values())} frames under {args.out}; read them back with:")
    print(f"  dataset: deepfakebench\n  dataset_options: {options}")
