"""A grid's cells on disk: each cell's folder and ``record.json``, the records of every finished cell, and the cells
whose Student was computed (or begun) under other settings than the grid gives it now.

Each record carries its Student's fingerprint (:func:`~experiments.config.fingerprint`): a grid whose settings changed
since refuses to mix the cells they change with new ones, unless told to recompute them.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from experiments.config import RESULT_NEUTRAL, RunConfig, SettingsChanged, fingerprint_differences
from experiments.grid.spec import BenchmarkConfig, split_cell_variant
from experiments.records.provenance import kernel_differences, numeric_environment
from experiments.records.student_run import FINISHED_STUDENT, StudentRecord, read_record
from experiments.training.checkpoint import CHECKPOINT_NAME, checkpoint_settings
from tsrl_env.validation import setting_differences


def cell_dir(out: Path, variant: str, tutor: str, seed: int) -> Path:
    return out / "cells" / variant / tutor / f"seed{seed}"


def report_failed_cell(directory: Path, error: BaseException) -> None:
    """Say on stderr, as it happens, that the cell in ``directory`` failed and why: a grid's other cells go on (their
    records kept) and the first failure is raised once they have finished, hours later on a long grid."""
    tqdm.write(
        f"cell {directory} failed ({type(error).__name__}: {error}); the other cells go on, and this error is raised "
        "once they finish",
        file=sys.stderr,
    )


def read_cell_record(path: Path) -> StudentRecord:
    """A cell's ``record.json`` (see :func:`~experiments.records.student_run.read_record`); one that cannot be read
    is refused, saying whether the next run rebuilds it from its Student's ``run.json``."""
    student = next(path.parent.glob("*/run.json"), None)
    rebuilt = (
        f"the next tsrl benchmark on this directory rebuilds it from its Student's {student} without retraining"
        if student
        else "the next tsrl benchmark on this directory trains this cell again"
    )
    return read_record(path, "the benchmark record", f"delete it: {rebuilt}")


def changed_cells(config: BenchmarkConfig, out: Path) -> dict[tuple[str, str, int], list[str]]:
    """The cells under ``out`` whose Student was computed or begun with other settings than ``config`` gives that
    cell now, with the settings that differ: see :func:`_cell_differences`.

    Each cell is compared on its own Student's settings only, so adding a tutor or a seed to a grid changes no
    finished cell; records written before fingerprints existed are taken as matching.
    """
    changed = {}
    for cell in config.cells():
        differences = _cell_differences(cell_dir(out, *cell), config.run_config(*cell))
        if differences:
            changed[cell] = differences
    return changed


def _cell_differences(directory: Path, config: RunConfig) -> list[str]:
    """How ``config`` differs from the settings of the cell's finished Student (its ``record.json``, or the
    ``run.json`` a record is rebuilt from) or of its unfinished one (the checkpoint it would continue from)."""
    record = directory / "record.json"
    student = directory / config.tutor / "run.json"
    checkpoint = directory / config.tutor / CHECKPOINT_NAME
    if record.is_file():
        return fingerprint_differences(read_cell_record(record).fingerprint, config)
    if student.is_file():
        return fingerprint_differences(read_record(student, *FINISHED_STUDENT).fingerprint, config)
    saved = checkpoint_settings(checkpoint) if checkpoint.is_file() else None
    return [] if saved is None else setting_differences(saved, config.to_dict(), ignore=RESULT_NEUTRAL)


# How many changed cells a refusal lists.
_LISTED_CELLS = 5


def forget_changed_cells(config: BenchmarkConfig, out: Path, rerun_changed: bool) -> None:
    """Delete the cells computed with other settings (``rerun_changed``), or refuse to go on while they exist. Such
    cells of the whole grid outside this run's selection (``--tutors``, ``--seeds``, ``--variants``) are refused
    either way: the grid's tables would mix them in, and this run would not compute them again."""
    changed = changed_cells(config.whole_grid(), out)
    selected = set(config.cells())
    outside = {cell: differences for cell, differences in changed.items() if cell not in selected}
    if outside:  # before any cell is deleted, so that a refused run leaves the grid as it found it
        raise SettingsChanged(
            f"{changed_report(out, outside)}\nThese cells are outside the tutors, seeds and variants chosen for this "
            "run, but in the grid its tables cover: run the grid without --tutors, --seeds and --variants (add "
            "--rerun-changed to compute them again), or give another --out"
        )
    if changed and not rerun_changed:
        raise SettingsChanged(
            f"{changed_report(out, changed)}\nGive another --out to keep that grid apart, or add --rerun-changed to "
            "delete these cells and compute them again under the settings given now"
        )
    for cell in changed:
        shutil.rmtree(cell_dir(out, *cell))


def refuse_cells_on_other_kernels(config: BenchmarkConfig, out: Path) -> None:
    """Refuse to add cells to a grid whose finished cells ran on another CPU or other kernels than this process would
    use (:func:`~experiments.records.provenance.kernel_differences`): a new cell would not pair bit for bit with the
    same seed's finished ones, whose warm-up and starting point it shares.

    Only what the records name can be compared: records written before they named their environment are taken as
    matching; a cell begun elsewhere and continued here from its checkpoint, or cells trained on a Ray cluster's other
    nodes, are not seen; and two CPUs that report the same name and, under the same caps, the same capability pass,
    whether or not they train the same Students (not known: ``experiments/results/reproducibility/README.md``)."""
    here = numeric_environment()
    other = {}
    for cell in config.cells():
        path = cell_dir(out, *cell) / "record.json"
        recorded = read_cell_record(path).environment if path.is_file() else None
        differences = kernel_differences(recorded, here) if recorded else []
        if differences:
            other[cell] = differences
    if other:
        raise SettingsChanged(
            f"{_cells_report(f'finished cell(s) under {out} ran on another CPU or other kernels than here', other)}\n"
            "New cells would not train the same Students bit for bit as these (docs/reproducibility.md): continue the "
            "grid on a machine like theirs, with the kernel variables their records name (e.g. ONEDNN_MAX_CPU_ISA, "
            "MKL_CBWR) set before torch starts, or give another --out"
        )


def changed_report(out: Path, changed: dict[tuple[str, str, int], list[str]]) -> str:
    return _cells_report(f"cell(s) under {out} were computed (or begun) with other settings than now", changed)


def _cells_report(what: str, cells: dict[tuple[str, str, int], list[str]]) -> str:
    """``len(cells) what:`` and the first cells listed, each with its differences."""
    listed = [f"  {variant}/{tutor}/seed{seed}: {'; '.join(diffs)}" for (variant, tutor, seed), diffs in cells.items()]
    more = [f"  ... and {len(listed) - _LISTED_CELLS} more"] if len(listed) > _LISTED_CELLS else []
    return "\n".join([f"{len(cells)} {what}:"] + listed[:_LISTED_CELLS] + more)


def load_records(config: BenchmarkConfig, out: Path) -> list[dict[str, Any]]:
    """The records of every finished cell of ``config``, each with its variant, tutor and seed (and its dataset
    where the grid has datasets, and ``same_student_as`` where another cell trained its Student)."""
    records = []
    for cell_variant, tutor, seed in config.cells():
        path = cell_dir(out, cell_variant, tutor, seed) / "record.json"
        if path.exists():
            variant, dataset = split_cell_variant(cell_variant)
            saved = read_cell_record(path)
            record = {"variant": variant, "tutor": tutor, "seed": seed, "run": saved.run}
            record |= {"dataset": dataset} if dataset else {}
            # A cell whose Student another cell trained (same fingerprint): pooling both would count it twice.
            records.append(record | ({"same_student_as": saved.same_student_as} if saved.same_student_as else {}))
    return records
