"""Grid cost: Students an hour of a whole grid, this checkout's code beside another revision's, back to back.

    python -m experiments.performance.grid_cost                     # the grid_cost grid, this checkout's code
    python -m experiments.performance.grid_cost --against c431237 \\
        --against-config experiments/configs/grid_cost_exact_meta_step.yaml --rounds 2

Method: each round runs ``tsrl benchmark --config CONFIG --workers W --cpus-per-cell C --no-progress --out TMP`` once
for each code, this checkout's and each ``--against`` revision's (checked out by ``git worktree add --detach`` into a
temporary folder, removed at the end), in an order that rotates round by round, each time into a fresh output folder,
as a subprocess of the same interpreter started in that code's root with ``OMP_NUM_THREADS=C`` and that root first on
``PYTHONPATH`` (so ``python -m experiments.cli`` imports that code, over the same installed packages). A record that
names another commit than the code it was run for stops the script. The clock is the subprocess's whole wall time:
interpreter start, imports, the datasets (from the shared dataset cache, filled for this checkout's config before the
first round; a revision that keys its cache otherwise fills it in its first run), every cell, the summary files.
Students: the cells that trained their own Student (a record copied to a cell of the same Student,
``same_student_as``, is not one). Students an hour: Students x 3,600 / wall time. ``x first``: each round's ratio to
the first code's Students an hour, and their median. ``same Students``: the cells whose test metrics (``run.test`` of
``record.json``) equal the first code's in the same round, bit for bit; the cells that differ are listed below the
table. Run it on an otherwise idle machine: another process on the cores moves every figure.
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
from experiments.grid.runner import build_datasets
from experiments.grid.spec import load_benchmark_config
from experiments.records.provenance import git, read_code_version
from experiments.report import format_table

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
    """One run of a grid by one code: its wall time, the Students it trained and every cell's test metrics."""

    wall_s: float
    students: int
    test_metrics: dict[str, Any]
    """``run.test`` of every cell, by the cell's folder relative to the grid's ``cells/``."""

    @property
    def students_per_hour(self) -> float:
        return self.students * 3600 / self.wall_s


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    benchmark = load_benchmark_config(args.config)
    build_datasets(benchmark, benchmark.cell_variants)
    with ExitStack() as stack:
        # Config files by absolute path, so that every code reads the same file, whatever its own configs folder holds.
        config = str(config_file(args.config).resolve())
        against_config = str(config_file(args.against_config).resolve()) if args.against_config else config
        codes = [_checkout(REPOSITORY, "this checkout", config)]
        codes += [_checkout(stack.enter_context(_worktree(revision)), revision, against_config) for revision in args.against]
        outputs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="grid_cost_")))
        rounds = []
        for number in range(args.rounds):
            # The order rotates round by round, so that a drift of the machine does not always favour the same code.
            order = [(number + shift) % len(codes) for shift in range(len(codes))]
            timings = {index: _time_grid(codes[index], args, outputs / f"round{number}_code{index}") for index in order}
            rounds.append([timings[index] for index in range(len(codes))])
    print(
        f"grid {args.config}, {args.workers} workers, {args.cpus_per_cell} torch thread(s) a cell, {os.cpu_count()} CPUs; "
        f"{args.rounds} round(s), the order of the codes rotating"
    )
    print(_table(codes, rounds))
    for index, code in enumerate(codes[1:], start=1):
        for number, timings in enumerate(rounds):
            differing = _unlike_first(timings[index], timings[0])
            if differing:
                print(f"round {number + 1}: {code.label}'s Students unlike the first code's: {', '.join(differing)}")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="grid_cost", help="the benchmark config this checkout runs (default: grid_cost)")
    parser.add_argument("--against", nargs="*", default=[], metavar="REVISION", help="git revisions to time beside it")
    parser.add_argument("--against-config", help="the config file the other revisions run (default: --config)")
    parser.add_argument("--rounds", type=_positive, default=1, help="rounds, each code once a round (default: 1)")
    parser.add_argument("--workers", type=_positive, default=2, help="tsrl benchmark --workers (default: 2)")
    parser.add_argument("--cpus-per-cell", type=_positive, default=1, help="tsrl benchmark --cpus-per-cell (default: 1)")
    parser.add_argument("--tutors", help="tsrl benchmark --tutors (default: the config's)")
    parser.add_argument("--seeds", type=_positive, help="tsrl benchmark --seeds (default: the config's)")
    return parser


def _checkout(root: Path, label: str, config: str) -> Code:
    """The code at ``root``, named by its commit (and whether it has uncommitted changes)."""
    version = read_code_version(root)
    if version["commit"] is None:
        raise SystemExit(f"grid_cost: {root} is not a git checkout git can read; it times the code of git commits")
    commit = version["commit"]
    named = label if commit.startswith(label) else f"{label} ({commit[:7]})"
    return Code(named + (" with uncommitted changes" if version["dirty"] else ""), root, commit, config)


@contextmanager
def _worktree(revision: str) -> Iterator[Path]:
    """``revision`` checked out, detached, in a temporary folder; the worktree removed and pruned at the end."""
    folder = Path(tempfile.mkdtemp(prefix="grid_cost_code_"))
    root = folder / "code"
    try:
        git(REPOSITORY, "worktree", "add", "--detach", "--quiet", str(root), revision, timeout=None)
    except (OSError, subprocess.CalledProcessError) as error:
        stderr = (getattr(error, "stderr", None) or str(error)).strip()
        raise SystemExit(f"grid_cost: cannot check out {revision!r} ({stderr}); give a commit of this git checkout") from error
    try:
        yield root
    finally:
        subprocess.run(
            ["git", "-C", str(REPOSITORY), "worktree", "remove", "--force", str(root)], capture_output=True, check=False
        )
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run(["git", "-C", str(REPOSITORY), "worktree", "prune"], capture_output=True, check=False)


def environment_of(code: Code, cpus_per_cell: int) -> dict[str, str]:
    """The environment ``tsrl benchmark`` runs in for ``code``: its root first on the import path (the command also
    starts there, and ``python -m`` puts the working folder first), so that it imports that code, not an installed one."""
    return {**os.environ, "OMP_NUM_THREADS": str(cpus_per_cell), "PYTHONPATH": str(code.root)}


def _time_grid(code: Code, args: argparse.Namespace, out: Path) -> GridTiming:
    command = [sys.executable, "-m", "experiments.cli", "benchmark", "--config", code.config, "--workers", str(args.workers)]
    command += ["--cpus-per-cell", str(args.cpus_per_cell), "--no-progress", "--out", str(out)]
    command += ["--tutors", args.tutors] if args.tutors else []
    command += ["--seeds", str(args.seeds)] if args.seeds else []
    start = time.perf_counter()
    finished = subprocess.run(
        command, cwd=code.root, env=environment_of(code, args.cpus_per_cell), capture_output=True, text=True
    )
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
    if not students:
        raise SystemExit(f"tsrl benchmark of {code.label} trained no Student in {out}: nothing to time")
    return GridTiming(wall_s, students, test_metrics)


def _unlike_first(timing: GridTiming, first: GridTiming) -> list[str]:
    """The cells of ``first`` whose test metrics ``timing`` does not repeat bit for bit."""
    return sorted(cell for cell, test in first.test_metrics.items() if timing.test_metrics.get(cell) != test)


def _table(codes: list[Code], rounds: list[list[GridTiming]]) -> str:
    firsts = [timings[0] for timings in rounds]
    rows = []
    for index, code in enumerate(codes):
        pairs = [(timings[index], first) for timings, first in zip(rounds, firsts, strict=True)]
        ratios = [timing.students_per_hour / first.students_per_hour for timing, first in pairs]
        same = [len(first.test_metrics) - len(_unlike_first(timing, first)) for timing, first in pairs]
        rows.append(
            [
                code.label,
                " ".join(f"{timing.wall_s:.0f}" for timing, _ in pairs),
                " ".join(str(timing.students) for timing, _ in pairs),
                " ".join(f"{timing.students_per_hour:.0f}" for timing, _ in pairs),
                " ".join(f"{ratio:.2f}" for ratio in ratios),
                f"{statistics.median(ratios):.2f}",
                " ".join(f"{count}/{len(first.test_metrics)}" for count, (_, first) in zip(same, pairs, strict=True)),
            ]
        )
    header = ["code", "wall s (by round)", "Students", "Students an hour", "x first", "x first (median)", "same Students"]
    return format_table(header, rows)


if __name__ == "__main__":
    main()
