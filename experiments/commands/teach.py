"""``tsrl teach``: one tutor taught over many Students (imitation of the oracle with dataset aggregation) and saved."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from experiments.commands import exit_when_stopped, print_markdown
from experiments.config import config_names
from experiments.preflight import writable_directory
from experiments.teaching.config import check_teach_settings, load_teach_config
from experiments.teaching.report import write_teaching_report
from experiments.teaching.teach import teach
from tsrl_env.files import directory_lock

DESCRIPTION = (
    "Teach one tutor over many Students: each is trained with the oracle's weights blended with the tutor's, and the "
    "tutor learns the oracle's weights on every state row seen so far (DAgger). Writes tutor.zip and tutor.json "
    "(register them as a saved tutor), teaching.json (the curve), examples.npz and teaching.md in --out. Run again with "
    "the same settings to continue after the last Student recorded."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument(
        "--config",
        default="teach_noise",
        help=f"teaching YAML: a path or one of: {', '.join(config_names('teach'))} (default: teach_noise)",
    )
    parser.add_argument(
        "--students", type=int, default=8, help="Students (episodes) to teach on, seeds from the config's first_seed (default: 8)"
    )
    parser.add_argument(
        "--out",
        default="runs/teach",
        help="directory of the tutor and its teaching curve; a rerun continues it (default: runs/teach)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars and per-Student lines")
    parser.add_argument(
        "--summary-only", action="store_true", help="rewrite teaching.md and the plots of --out, teaching nothing"
    )


def run(args: argparse.Namespace) -> None:
    if args.summary_only:
        with directory_lock(Path(args.out), "tsrl teach --summary-only"):  # never beside a teach writing there
            print_markdown(write_teaching_report(Path(args.out)))
        return
    config = load_teach_config(args.config)
    check_teach_settings(config, args.students)  # before the output directory is made
    out = writable_directory(Path(args.out))
    start = time.perf_counter()
    command = shlex.join(["tsrl", "teach", "--config", args.config, "--students", str(args.students), "--out", str(out)])
    with exit_when_stopped():
        curve = teach(config, args.students, out, progress=not args.no_progress, resume_command=command)
    print(f"{len(curve)} Students taught in {out} ({time.perf_counter() - start:.0f} s this run); the tutor: {out / 'tutor.zip'}")
