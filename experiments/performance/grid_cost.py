"""Grid cost: Students an hour of a whole grid, this checkout's code beside another revision's, back to back.

    python -m experiments.performance.grid_cost                     # the grid_cost grid, this checkout's code
    python -m experiments.performance.grid_cost --against c431237 \\
        --against-config experiments/configs/grid_cost_exact_meta_step.yaml --rounds 2

Method: each round runs ``tsrl benchmark --config CONFIG --workers W --cpus-per-cell C --no-progress --out TMP`` once
for each code in turn, this checkout's first, then each ``--against`` revision's (checked out by ``git worktree add
--detach`` into a temporary folder, removed at the end), each time into a fresh output folder, as a subprocess of the
same interpreter started in that code's root with ``OMP_NUM_THREADS=C`` (so ``python -m experiments.cli`` imports that
code, over the same installed packages). A record that names another commit than the code it was run for stops the
script. The clock is the subprocess's whole wall time: interpreter start, imports, the datasets (from the shared
dataset cache, filled for this checkout's config before the first round; a revision that keys its cache otherwise
fills it in its first round), every cell, the summary files. Students: the cells that trained their own Student
(a record copied to a cell of the same Student, ``same_student_as``, is not one). Students an hour: Students x 3,600 /
wall time. ``x first``: the median over rounds of the ratio to the first code's Students an hour in the same round.
``same Students``: the cells whose test metrics (``run.test`` of ``record.json``) equal the first code's in the same
round, bit for bit. Run it on an otherwise idle machine: another process on the cores moves every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.config import config_file
from experiments.grid.spec import load_benchmark_config
from experiments.report import format_table
from tsrl_env.data import make_dataset

REPOSITORY = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Code:
    """One code to time: a label, the root it runs from, the commit it must record and the config it reads."""

    label: str
    root: Path
    commit: str
    config: str


@dataclass(frozen=True)
class GridTiming:
    wall_s: float
    students: int
    test_metrics: dict[str, Any]
    """``run.test`` of every cell, by the cell's folder relative to the grid's ``cells/``."""

    @property
    def students_per_hour(self) -> float:
        return self.students * 3600 / self.wall_s


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    _fill_dataset_cache(args.config)
    with ExitStack() as stack:
        # Config files by absolute path, so that every code reads the same file, whatever its own configs folder holds.
        config = str(config_file(args.config).resolve())
        against_config = str(config_file(args.against_config).resolve()) if args.against_config else config
        codes = [Code(f"this checkout ({_commit(REPOSITORY)[:7]})", REPOSITORY, _commit(REPOSITORY), config)]
        for revision in args.against:
            root = stack.enter_context(_worktree(revision))
            commit = _commit(root)
            label = revision if commit.startswith(revision) else f"{revision} ({commit[:7]})"
            codes.append(Code(label, root, commit, against_config))
        outputs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="grid_cost_")))
        rounds = [
            [_time_grid(code, args, outputs / f"round{number}_code{index}") for index, code in enumerate(codes)]
            for number in range(args.rounds)
        ]
    print(
        f"grid {args.config}, {args.workers} workers, {args.cpus_per_cell} torch thread(s) a cell, {os.cpu_count()} CPUs; "
        f"{args.rounds} round(s), codes in turn"
    )
    print(_table(codes, rounds))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="grid_cost", help="the benchmark config this checkout runs (default: grid_cost)")
    parser.add_argument("--against", nargs="*", default=[], metavar="REVISION", help="git revisions to time beside it")
    parser.add_argument("--against-config", help="the config file the other revisions run (default: --config)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, each code once a round (default: 1)")
    parser.add_argument("--workers", type=int, default=2, help="tsrl benchmark --workers (default: 2)")
    parser.add_argument("--cpus-per-cell", type=int, default=1, help="tsrl benchmark --cpus-per-cell (default: 1)")
    parser.add_argument("--tutors", help="tsrl benchmark --tutors (default: the config's)")
    parser.add_argument("--seeds", type=int, help="tsrl benchmark --seeds (default: the config's)")
    return parser


def _fill_dataset_cache(config_name: str) -> None:
    config = load_benchmark_config(config_name)
    for variant in config.cell_variants:
        env = config.run_config(variant, config.tutors[0], config.seeds[0]).env
        make_dataset(env.dataset, **env.dataset_options)


def _commit(root: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


@contextmanager
def _worktree(revision: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="grid_cost_code_"))
    root = folder / "code"
    subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "add", "--detach", "--quiet", str(root), revision], check=True)
    try:
        yield root
    finally:
        subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "remove", "--force", str(root)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def _time_grid(code: Code, args: argparse.Namespace, out: Path) -> GridTiming:
    command = [sys.executable, "-m", "experiments.cli", "benchmark", "--config", code.config, "--workers", str(args.workers)]
    command += ["--cpus-per-cell", str(args.cpus_per_cell), "--no-progress", "--out", str(out)]
    command += ["--tutors", args.tutors] if args.tutors else []
    command += ["--seeds", str(args.seeds)] if args.seeds else []
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.cpus_per_cell), "PYTHONPATH": str(code.root)}
    start = time.perf_counter()
    finished = subprocess.run(command, cwd=code.root, env=environment, capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    if finished.returncode != 0:
        raise SystemExit(f"tsrl benchmark of {code.label} failed (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
    return _read_grid(out, code, wall_s)


def _read_grid(out: Path, code: Code, wall_s: float) -> GridTiming:
    students, test_metrics = 0, {}
    for path in sorted((out / "cells").glob("**/record.json")):
        record = json.loads(path.read_text())
        recorded = (record.get("code") or {}).get("commit")
        if recorded is not None and recorded != code.commit:
            raise SystemExit(f"{path} was written by commit {recorded}, not by {code.label}'s {code.commit}: another code ran")
        students += "same_student_as" not in record
        test_metrics[path.parent.relative_to(out / "cells").as_posix()] = record["run"]["test"]
    return GridTiming(wall_s, students, test_metrics)


def _table(codes: list[Code], rounds: list[list[GridTiming]]) -> str:
    firsts = [timings[0] for timings in rounds]
    rows = []
    for index, code in enumerate(codes):
        mine = [timings[index] for timings in rounds]
        pairs = list(zip(mine, firsts, strict=True))
        ratios = [timing.students_per_hour / first.students_per_hour for timing, first in pairs]
        same = [
            sum(timing.test_metrics.get(cell) == test for cell, test in first.test_metrics.items()) for timing, first in pairs
        ]
        rows.append(
            [
                code.label,
                " ".join(f"{timing.wall_s:.0f}" for timing in mine),
                " ".join(str(timing.students) for timing in mine),
                " ".join(f"{timing.students_per_hour:.0f}" for timing in mine),
                f"{statistics.median(ratios):.2f}",
                " ".join(f"{count}/{len(first.test_metrics)}" for count, first in zip(same, firsts, strict=True)),
            ]
        )
    header = ["code", "wall s (by round)", "Students", "Students an hour", "x first (median)", "same Students"]
    return format_table(header, rows)


if __name__ == "__main__":
    main()
