"""``tsrl export``: a grid's evaluation dataset written in DeepfakeBench's layout (:mod:`tsrl_env.data.export`), so
that a grid can read the same images through the ``deepfakebench`` source, with flips the loader draws."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from experiments.config import config_names
from experiments.grid.spec import BenchmarkConfig, load_benchmark_config
from experiments.preflight import writable_directory
from tsrl_env.config import EnvConfig
from tsrl_env.data import make_dataset
from tsrl_env.data.export import export_deepfakebench

LABEL_NOISE_OPTIONS = ("label_noise", "noise_model", "noise_seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    grids = ", ".join(config_names("benchmark"))
    parser.add_argument("--config", required=True, help=f"a benchmark config, a YAML path or one of: {grids}")
    parser.add_argument("--dataset", help="one of the grid's datasets (default: its first, or its only data)")
    parser.add_argument(
        "--variant", help="the variant whose data to write (needed only where the grid's variants change its images)"
    )
    parser.add_argument("--out", required=True, help="output folder: rgb/, dataset_json/ and dataset_options.yaml")


def run(args: argparse.Namespace) -> None:
    config = load_benchmark_config(args.config)
    if args.dataset is not None and args.dataset not in config.datasets:
        having = f"it has {', '.join(config.datasets)}" if config.datasets else "it has none: leave --dataset out"
        raise SystemExit(f"the grid {args.config!r} has no dataset {args.dataset!r}; {having}")
    if args.variant is not None and args.variant not in config.variants:
        raise SystemExit(f"the grid {args.config!r} has no variant {args.variant!r}; it has {', '.join(config.variants)}")
    dataset = args.dataset or next(iter(config.datasets), None)
    images = {variant: _image_settings(config, variant, dataset) for variant in config.variants}
    if args.variant is None and len({json.dumps(settings, sort_keys=True) for settings in images.values()}) > 1:
        raise SystemExit(
            f"the variants of {args.config!r} change the images, not only the label noise; name one with --variant "
            f"({', '.join(config.variants)})"
        )
    env = _env(config, args.variant or next(iter(config.variants)), dataset)
    if env.dataset != "embedded":
        raise SystemExit(
            f"the grid {args.config!r} reads {env.dataset!r} data, already on disk; export is for the embedded benchmark"
        )
    # The true labels are written; a grid reading the files draws its own flips (deepfakebench's label_noise).
    data = make_dataset(env.dataset, **{**env.dataset_options, "label_noise": 0.0})
    options = export_deepfakebench(data, writable_directory(Path(args.out)))
    print(f"wrote {sum(len(split) for split in data.splits.values())} frames under {args.out}; read them back with:")
    print(f"  dataset: deepfakebench\n  dataset_options: {options}")


def _env(config: BenchmarkConfig, variant: str, dataset: str | None) -> EnvConfig:
    cell_variant = variant if dataset is None else f"{variant}/{dataset}"
    return config.run_config(cell_variant, config.tutors[0], config.seeds[0]).env


def _image_settings(config: BenchmarkConfig, variant: str, dataset: str | None) -> dict[str, Any]:
    """What decides the images of ``variant``'s data: its dataset options but the label noise's."""
    options = _env(config, variant, dataset).dataset_options
    return {key: value for key, value in options.items() if key not in LABEL_NOISE_OPTIONS}
