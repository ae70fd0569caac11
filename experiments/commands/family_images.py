"""``tsrl family-images``: a PNG of real images beside their manipulated versions, one row per manipulation family
(``tsrl grid``, its former name, still runs it)."""

from __future__ import annotations

import argparse

from tsrl_env.data import save_family_grid


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="family_grid.png", help="PNG path (default: family_grid.png)")
    parser.add_argument("--examples", type=int, default=6, help="examples per family (default: 6)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")


def run(args: argparse.Namespace) -> None:
    path = save_family_grid(args.out, examples_per_family=args.examples, seed=args.seed)
    print(f"wrote {path}")
