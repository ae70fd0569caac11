"""The ``tsrl`` commands, one module each: ``add_arguments(parser)`` declares a command's options and ``run(args)`` runs
it. :mod:`experiments.cli` imports a command's module only when that command is named, so that ``tsrl --help`` starts
without importing torch, Stable-Baselines3 or timm; this module stays as light.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from experiments.training.signals import RunStopped


@dataclass(frozen=True)
class Command:
    """A ``tsrl`` command: its name, the module that implements it, its line in ``tsrl --help``, other names it
    answers to, and whether it computes in this process (then the torch threads it uses are printed first)."""

    name: str
    module: str
    help: str
    aliases: tuple[str, ...] = ()
    computes: bool = False


COMMANDS = (
    Command(
        "train",
        "experiments.commands.train",
        "train a Student with uniform weights and one with a tutor, and compare them (--no-baseline: the tutored one only)",
        computes=True,
    ),
    Command(
        "benchmark",
        "experiments.commands.benchmark",
        "run a tutor x seed x variant grid and write results.csv, results.md, plots",
    ),
    Command(
        "evaluate",
        "experiments.commands.evaluate",
        "test saved Students on the test splits of a dataset config, side by side (cross-dataset)",
        computes=True,
    ),
    Command(
        "family-images",
        "experiments.commands.family_images",
        "save a PNG of real images and their manipulated versions, one row per family",
        aliases=("grid",),
    ),
    Command(
        "calibrate",
        "experiments.commands.calibrate",
        "test AUCs of uniform-weight Students with and without label noise",
        computes=True,
    ),
    Command(
        "preprocess",
        "experiments.commands.preprocess",
        "sample frames of videos, crop the largest face, write them with a DeepfakeBench dataset JSON",
    ),
    Command(
        "export",
        "experiments.commands.export",
        "write a grid's embedded evaluation dataset in DeepfakeBench's layout (PNG frames and dataset JSON)",
    ),
    Command(
        "teach",
        "experiments.commands.teach",
        "teach one tutor over many Students (imitation of the oracle with dataset aggregation) and save it",
        computes=True,
    ),
)
"""Every command, in the order ``tsrl --help`` lists them."""


def print_markdown(text: str) -> None:
    """A report written as Markdown (``results.md``, ``teaching.md``): rendered as tables in a terminal, the Markdown
    itself when the output goes to a file or a pipe (where it is meant to be kept)."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    else:
        print(text)


@contextmanager
def exit_when_stopped() -> Iterator[None]:
    """A run stopped before its end (:class:`~experiments.training.signals.RunStopped`: a stop signal, a diverging
    loss) prints what is kept and how to continue, and exits with the run's exit code."""
    try:
        yield
    except RunStopped as stopped:
        print(f"\n{stopped}", file=sys.stderr)
        sys.exit(stopped.exit_code)
