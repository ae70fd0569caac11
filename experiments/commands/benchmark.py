"""``tsrl benchmark``: a tutor x seed x variant grid, run and summarised (``results.csv``, ``results.md``, plots); without
``--config``, the benchmark configs listed with their sizes and estimated wall times."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from agents import TUTORS
from experiments.commands import exit_when_stopped, print_markdown
from experiments.config import config_names
from experiments.grid.estimate import available_benchmarks
from experiments.grid.runner import BACKENDS, run_benchmark
from experiments.grid.spec import load_benchmark_config
from experiments.grid.summary import write_summary
from experiments.preflight import writable_directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tutors, benchmark_configs = ", ".join(TUTORS), ", ".join(config_names("benchmark"))
    parser.add_argument("--config", help=f"a YAML path or one of: {benchmark_configs}; without it, list them with their sizes")
    parser.add_argument(
        "--tutors",
        help="comma-separated tutors to run (overrides the config; the tables cover the whole grid), each one of: "
        f"{tutors}; tutor@reward for a learned one",
    )
    parser.add_argument("--seeds", type=int, help="run seeds 0..N-1 (overrides the config)")
    parser.add_argument("--variants", help="comma-separated variants of the config to run (default: all)")
    parser.add_argument(
        "--workers", type=int, default=1, help="cells at once: local processes, or the local Ray instance's size (default: 1)"
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default="local", help="local processes, or Ray tasks (needs pip install '.[ray]')"
    )
    parser.add_argument("--address", help="with --backend ray: the Ray cluster to submit to (default: start a local instance)")
    parser.add_argument(
        "--cpus-per-cell", type=int, help="torch threads of each cell, the CPUs a Ray task asks for (default: cores / workers)"
    )
    parser.add_argument("--out", help="output folder (default: runs/benchmark/<config name>); finished cells there are kept")
    parser.add_argument("--summary-only", action="store_true", help="only rebuild the tables and plots from finished cells")
    parser.add_argument(
        "--extend",
        action="store_true",
        help="add seeds or datasets to a grid that has finished cells (its results then say it was extended)",
    )
    parser.add_argument(
        "--rerun-changed", action="store_true", help="compute again the finished cells whose settings changed since"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _list_benchmarks(workers: int) -> None:
    print(
        f"Benchmark configs (tsrl benchmark --config NAME); wall time estimated for --workers {workers} on a 2-core CPU, "
        "cells of one Student (the same settings) counted once:"
    )
    benchmarks = available_benchmarks(workers)
    width = max(len(name) for name, _, _ in benchmarks)
    for name, config, seconds in benchmarks:
        env = config.run_config(*next(config.cells())).env
        size = f"{env.backbone}, {env.warmup_epochs}+{env.epochs} epochs"
        estimate = "not measured" if math.isnan(seconds) else f"~{_duration(seconds)}"
        cells = len(list(config.cells()))
        grid = f"{len(config.tutors)} tutors x {len(config.seeds)} seeds x {len(config.variants)} variant(s)"
        grid += f" x {len(config.datasets)} datasets" if config.datasets else ""
        print(f"  {name:<{width}} {cells:>4} Students {f'({grid})':<42} {size:<26} {estimate}")


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"


def run(args: argparse.Namespace) -> None:
    if args.config is None:
        _list_benchmarks(args.workers if args.workers > 1 else 2)
        return
    tutors = args.tutors.split(",") if args.tutors else None
    seeds = list(range(args.seeds)) if args.seeds else None
    variants = args.variants.split(",") if args.variants else None
    config = load_benchmark_config(args.config, tutors=tutors, seeds=seeds, variants=variants)
    out = writable_directory(Path(args.out) if args.out else Path("runs") / "benchmark" / Path(args.config).stem)
    print(f"benchmark directory: {out}")
    start = time.perf_counter()
    if not args.summary_only:
        with exit_when_stopped():  # a grid of one worker trains its cells in this process
            run_benchmark(
                config,
                out,
                workers=args.workers,
                progress=not args.no_progress,
                backend=args.backend,
                address=args.address,
                cpus_per_cell=args.cpus_per_cell,
                rerun_changed=args.rerun_changed,
                extend=args.extend,
            )
    # The tables cover the whole grid, whatever part of it this run computed: a family of the selected tutors alone
    # would be a smaller Holm family than the grid's.
    print_markdown(write_summary(config.whole_grid(), out))
    print(f"wall time {time.perf_counter() - start:.0f} s; tables and plots in {out}")
