"""Running a benchmark grid: every cell of a :class:`~experiments.grid.spec.BenchmarkConfig`, in parallel, resumable.

Each cell (one Student taught by one tutor) writes its own ``record.json`` atomically when it finishes; a cell
whose record exists is never rerun, so an interrupted grid continues where it stopped. Cells whose Student is the same
(same fingerprint and threads) train it once and share its record. Each record carries its
Student's fingerprint (:func:`~experiments.config.fingerprint`): a grid whose settings changed since refuses to mix
the cells they change with new ones, unless told to recompute them, and one whose finished cells ran on another CPU
or other kernels refuses to add cells beside them. A running grid locks its output directory, and
its worker processes exit when it dies. The summary files (``results.csv``, ``results.md``, plots) are rebuilt from
all records at the end of every invocation.

Cells run in local processes (the default) or as Ray tasks on a local Ray instance or a cluster
(:mod:`experiments.grid.ray_backend`); both run the same per-cell function and write the same records. A grid of one
worker runs its cells one after another in the calling process (no interpreter to start, no imports to repeat).

A cell's result is exactly reproducible for the same seed and the same number of torch threads per cell (CPU
cores / workers, or the ``cpus_per_cell`` given; recorded in each cell); another thread count changes the order of
floating-point sums in the Student's convolutions, hence its weights in the last bits and, over an episode, its
metrics.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from experiments.config import fingerprint, run_config_from_dict
from experiments.grid.cells import (
    cell_dir,
    forget_changed_cells,
    load_records,
    refuse_cells_on_other_kernels,
    report_failed_cell,
)
from experiments.grid.plan import check_plan
from experiments.grid.spec import BenchmarkConfig
from experiments.preflight import check_run_settings
from experiments.records.provenance import code_version, numeric_environment
from experiments.training.pretrain import build_missing_pretrained_file
from experiments.training.signals import RunStopped
from experiments.training.student import train_student
from tsrl_env.data import make_dataset
from tsrl_env.files import directory_lock, write_atomically


def _run_cell(
    run_config: dict[str, Any], directory: str, threads: int, record_rewards: bool = False, warmups: str | None = None
) -> str:
    """One cell: train its Student with ``threads`` torch threads and write its record atomically. Returns the record's
    path.

    A cell interrupted earlier continues from its Student's last epoch checkpoint. ``record_rewards`` and ``warmups``
    (the grid's shared warm-ups): see :func:`~experiments.training.student.train_student`.
    """
    torch.set_num_threads(threads)
    config = run_config_from_dict(run_config)
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    config.save(path / "config.yaml")
    resume_command = "the same tsrl benchmark command (finished cells are kept, this one continues)"
    run = train_student(
        config,
        path,
        progress=False,
        save_student=False,
        resume=True,
        resume_command=resume_command,
        record_rewards=record_rewards,
        warmups=Path(warmups) if warmups else None,
    )
    # The Student's own provenance: a record rebuilt from a finished run.json names the process that trained it.
    trained = json.loads((path / run.label / "run.json").read_text())
    record = {
        "tutor": config.tutor,
        "seed": config.seed,
        "torch_threads": threads,
        "environment": trained.get("environment", numeric_environment()),
        "code": trained.get("code", code_version()),
        "fingerprint": fingerprint(config),
        "run": asdict(run),
    }
    write_atomically(path / "record.json", json.dumps(record))
    return str(path / "record.json")


# How often a pool worker looks for its parent, and how long a cell it trains may take to stop once the parent is gone.
_PARENT_POLL_S = 1.0
_STOP_GRACE_S = 10.0


def _exit_with_parent(parent: int) -> None:
    """Pool initializer: the worker stops when the process that started it (``parent``) is gone, even killed by
    SIGKILL, rather than train the remaining cells unsupervised and then idle forever."""
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    # SIGTERM first, so that a cell in training stops as on a stop signal (its last checkpoint kept); the exit then
    # ends a worker that would wait for the dead parent's next task forever.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(_STOP_GRACE_S)
    os._exit(1)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` fresh processes (spawned: no state copied from this one) that exit when this process dies."""
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_exit_with_parent, initargs=(os.getpid(),))


BACKENDS = ("local", "ray")
WARMUPS = "warmups"
"""The folder of a grid's shared warm-ups (:mod:`experiments.training.warmups`): the Students of a cell's tutors start
alike."""


def run_benchmark(
    config: BenchmarkConfig,
    out: Path,
    workers: int = 1,
    progress: bool = True,
    backend: str = "local",
    address: str | None = None,
    cpus_per_cell: int | None = None,
    rerun_changed: bool = False,
    extend: bool = False,
) -> list[dict[str, Any]]:
    """Run every cell whose record is missing, ``workers`` at a time, and return all records.

    The directory's plan (:mod:`experiments.grid.plan`) is written on its first run; seeds or datasets beyond it are
    refused once cells have finished, unless ``extend`` (which the summary then reports).

    Where cells are to be computed or ``rerun_changed`` is given, finished cells that ran on another CPU or other kernels
    (:func:`~experiments.grid.cells.refuse_cells_on_other_kernels`) raise :class:`~experiments.config.SettingsChanged`
    before any work or deletion. Then the grid's pretrained Student is built where it is missing (its hash enters the
    fingerprints), and cells finished under other settings than ``config`` gives them (see
    :func:`~experiments.grid.cells.changed_cells`) raise it, or with ``rerun_changed`` are deleted and computed again,
    before any cell trains. The run holds the lock of ``out``
    (:func:`~tsrl_env.files.directory_lock`): a second grid there is refused.

    ``backend="local"`` runs the cells in ``workers`` local processes (one worker: in this process, one cell after
    another, this process's torch threads restored after); ``backend="ray"`` submits each as a Ray task
    (:mod:`experiments.grid.ray_backend`) to a local Ray instance sized for ``workers`` cells at once, or to the cluster
    at ``address``. Each cell uses ``cpus_per_cell`` torch threads (default: this machine's cores / ``workers``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown benchmark backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    if address is not None and backend != "ray":
        raise ValueError(f"a cluster address ({address!r}) is for the Ray backend; add --backend ray or drop --address")
    if cpus_per_cell is not None and cpus_per_cell < 1:
        raise ValueError(f"cpus per cell must be at least 1, got {cpus_per_cell}")
    run_on_ray = None
    if backend == "ray":
        # Here, before any work, so that a missing Ray is reported at once.
        from experiments.grid.ray_backend import run_cells_on_ray as run_on_ray
    threads = cpus_per_cell or max(1, (os.cpu_count() or 1) // workers)
    for variant in config.cell_variants:
        cell = config.run_config(variant, config.tutors[0], config.seeds[0])
        # The grid builds its own pretrained file only: a variant that starts from another is checked as it is.
        builds_its_file = cell.env.pretrained_file == config.env.pretrained_file
        check_run_settings(replace(cell, pretrain=config.pretrain if builds_its_file else None))
    out.mkdir(parents=True, exist_ok=True)
    with directory_lock(out, "tsrl benchmark"):
        check_plan(out, config.planned(), any((out / "cells").glob("**/record.json")), extend)
        if rerun_changed or any(not (cell_dir(out, *cell) / "record.json").exists() for cell in config.cells()):
            # Before any work or deletion, so that a refused run leaves the grid as it found it.
            refuse_cells_on_other_kernels(config.whole_grid(), out)
        # Before the cells' fingerprints are compared: they hold the file's hash.
        build_missing_pretrained_file(config.pretrain, config.env.pretrained_file, progress)
        forget_changed_cells(config, out, rerun_changed)
        _run_missing_cells(config, out, workers, threads, progress, run_on_ray, address)
        # Kept while cells are missing (an interrupted grid reuses them); a finished grid needs none (32 MB each).
        shutil.rmtree(out / WARMUPS, ignore_errors=True)
    return load_records(config, out)


def _run_missing_cells(
    config: BenchmarkConfig,
    out: Path,
    workers: int,
    threads: int,
    progress: bool,
    run_on_ray: Callable[..., Iterator[str]] | None,
    address: str | None,
) -> None:
    todo = [cell for cell in config.cells() if not (cell_dir(out, *cell) / "record.json").exists()]
    write_atomically(out / "config.yaml", yaml.safe_dump(config.recorded(), sort_keys=False))
    total = len(list(config.cells()))
    bar = tqdm(total=total, initial=total - len(todo), desc="benchmark", disable=not progress)
    todo, twins = _one_cell_per_student(config, out, todo, threads)
    for source in [source for source in twins if (source / "record.json").exists()]:
        bar.update(_copy_to_twins(source, twins.pop(source), out))
    # Each variant's dataset built (and cached) here, once, so that no cell's wall time includes generating it.
    build_datasets(config, {variant for variant, _, _ in todo})
    cells = [(config.run_config(*cell).to_dict(), cell_dir(out, *cell)) for cell in todo]
    run_cell = partial(_run_cell, record_rewards=config.records_rewards, warmups=str((out / WARMUPS).resolve()))
    with ExitStack() as stack:
        if run_on_ray is not None:
            finished = run_on_ray(run_cell, cells, threads, local_cells=workers, address=address)
        elif workers == 1:
            finished = _in_this_process(run_cell, cells, threads)
        else:
            pool = stack.enter_context(worker_pool(workers))
            # Leaving early (a stop signal, a dead pool) cancels the cells not yet begun instead of running them all.
            stack.callback(pool.shutdown, cancel_futures=True)
            futures = {pool.submit(run_cell, run_config, str(directory), threads): directory for run_config, directory in cells}
            finished = _each_record((futures[future], future.result) for future in as_completed(futures))
        for record in finished:
            bar.set_postfix_str(Path(record).parent.relative_to(out / "cells").as_posix())
            bar.update(1 + _copy_to_twins(Path(record).parent, twins.pop(Path(record).parent, []), out))
    bar.close()


def build_datasets(config: BenchmarkConfig, variants: Iterable[str]) -> None:
    """Build, and so cache, the dataset of each of ``variants`` (cell variants of ``config``)."""
    for variant in variants:
        env = config.run_config(variant, config.tutors[0], config.seeds[0]).env
        make_dataset(env.dataset, **env.dataset_options)


Cell = tuple[str, str, int]


def _one_cell_per_student(
    config: BenchmarkConfig, out: Path, todo: list[Cell], threads: int
) -> tuple[list[Cell], dict[Path, list[Path]]]:
    """The cells to train, one per distinct Student, and the cells that take another's record instead.

    Two cells with the same fingerprint and torch threads train the same Student bit for bit (variants that differ
    only in one tutor's keywords give every other tutor identical cells): the first is trained, or a finished one
    reused, and its record copied to the others (:func:`_copy_to_twins`). Returns the cells to train and, per cell
    directory that trains (or has) a record, the directories that take a copy of it.
    """
    owners: dict[str, Path] = {}
    for cell in config.cells():
        path = cell_dir(out, *cell) / "record.json"
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("torch_threads") == threads and record.get("fingerprint"):
                owners.setdefault(json.dumps(record["fingerprint"], sort_keys=True), path.parent)
    to_train: list[Cell] = []
    twins: dict[Path, list[Path]] = {}
    for cell in todo:
        key = json.dumps(fingerprint(config.run_config(*cell)), sort_keys=True)
        if key in owners:
            twins.setdefault(owners[key], []).append(cell_dir(out, *cell))
        else:
            owners[key] = cell_dir(out, *cell)
            to_train.append(cell)
    return to_train, twins


def _copy_to_twins(source: Path, twins: list[Path], out: Path) -> int:
    """Write ``source``'s record into each twin cell, saying whose Student it is (``same_student_as``); returns how
    many."""
    record = json.loads((source / "record.json").read_text())
    record.setdefault("same_student_as", source.relative_to(out).as_posix())
    for twin in twins:
        twin.mkdir(parents=True, exist_ok=True)
        write_atomically(twin / "record.json", json.dumps(record))
    return len(twins)


def _each_record(attempts: Iterable[tuple[Path, Callable[[], str]]]) -> Iterator[str]:
    """Each (cell directory, call that returns its record's path) tried in turn, the record's path yielded; a failed
    cell is said at once (:func:`~experiments.grid.cells.report_failed_cell`) and the others go on; the first failure
    is raised once all have been tried, as the Ray backend does. A stop signal, or a pool whose workers died, stops
    the grid at once."""
    failure: Exception | None = None
    for directory, record in attempts:
        try:
            path = record()
        except BrokenExecutor:
            raise
        except Exception as error:  # any error of one cell's training: the cell is named, the error raised at the end
            if isinstance(error, RunStopped) and error.signal_number is not None:
                raise
            report_failed_cell(directory, error)
            # The error is kept for the end; its frames' locals (a cell's Student, data) are not.
            traceback.clear_frames(error.__traceback__)
            failure = failure or error
            continue
        yield path
    if failure is not None:
        raise failure


def _in_this_process(run_cell: Callable[..., str], cells: list[tuple[dict[str, Any], Path]], threads: int) -> Iterator[str]:
    """The cells one after another in this process, as a pool of one worker would run them (each sets its torch
    threads); this process's own thread count is restored after."""
    before = torch.get_num_threads()
    try:
        yield from _each_record(
            (directory, partial(run_cell, run_config, str(directory), threads)) for run_config, directory in cells
        )
    finally:
        torch.set_num_threads(before)
