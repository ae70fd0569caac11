"""``tsrl evaluate``: saved Students tested on the test splits of any dataset config, side by side.

The DeepfakeBench protocol trains on one dataset and tests on others (FaceForensics++ c23, then Celeb-DF-v2, DFDC, …):
a Student saved by ``tsrl train`` (its ``student.pt``, its folder, or the whole run directory) is scored on the test
splits of the config given, with the metrics ``tsrl train`` reports, one column per Student.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from experiments.config import RunConfig, load_run_config
from experiments.record import StudentRun
from experiments.train import check_run_settings
from tsrl_env.config import EnvConfig
from tsrl_env.data import data_source
from tsrl_env.trainer import StudentTrainer

STUDENT_FILE = "student.pt"


@dataclass(frozen=True)
class SavedStudent:
    """A Student's weights, its label in tables, and the env settings it was trained with (None when unknown)."""

    label: str
    weights: Path
    trained_with: EnvConfig | None


def find_students(path: Path) -> list[SavedStudent]:
    """The Students ``path`` names: a ``student.pt``, a Student's folder holding one, or a run directory (each of its
    Students, in the order of its ``results.json``, then by folder name). A Student of a run directory knows its run's
    settings."""
    if path.is_file():
        return [_saved_student(path)]
    if (path / STUDENT_FILE).is_file():
        return [_saved_student(path / STUDENT_FILE)]
    found = sorted(path.glob(f"*/{STUDENT_FILE}"), key=_run_order(path)) if path.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"{str(path)!r} is neither a {STUDENT_FILE}, nor a folder holding one, nor a run directory of tsrl train with "
            "saved Students; give one of those"
        )
    return [_saved_student(weights) for weights in found]


def _run_order(run_dir: Path) -> Callable[[Path], tuple[int, str]]:
    """Sort key of a run's ``LABEL/student.pt`` files: the Students its ``results.json`` lists, in its order, first."""
    results = run_dir / "results.json"
    labels = [run["label"] for run in json.loads(results.read_text())] if results.is_file() else []

    def key(weights: Path) -> tuple[int, str]:
        label = weights.parent.name
        return (labels.index(label) if label in labels else len(labels), label)

    return key


def _saved_student(weights: Path) -> SavedStudent:
    run_config = weights.parent.parent / "config.yaml"
    trained_with = load_run_config(run_config).env if run_config.is_file() else None
    label = f"{weights.parent.parent.name}/{weights.parent.name}" if trained_with else weights.parent.name or weights.stem
    return SavedStudent(label, weights, trained_with)


def input_size(env: EnvConfig) -> int | None:
    """The side of the images a Student of ``env`` sees: the env's ``image_size``, else its data source's (None when
    the source does not say before loading)."""
    if env.image_size is not None:
        return env.image_size
    if "image_size" in env.dataset_options:
        return int(env.dataset_options["image_size"])
    options = data_source(env.dataset).options
    defaults = {field.name: field.default for field in dataclasses.fields(options)} if options else {}
    return defaults.get("image_size")


def check_fits(student: SavedStudent, env: EnvConfig) -> None:
    """Refuse a Student trained with another backbone or input size than ``env`` evaluates, naming both."""
    if student.trained_with is None:
        return
    trained = (student.trained_with.backbone, input_size(student.trained_with))
    evaluated = (env.backbone, input_size(env))
    if trained != evaluated:
        raise ValueError(
            f"the Student {student.label} was trained as backbone {trained[0]!r} at {trained[1]} px, but the evaluation "
            f"config gives backbone {evaluated[0]!r} at {evaluated[1]} px; pass --backbone {trained[0]} --image-size "
            f"{trained[1]} (or evaluate a Student of that backbone and size)"
        )


def evaluation_config(config: RunConfig) -> EnvConfig:
    """The env settings Students are evaluated with: ``config``'s, never downloading weights the Students replace."""
    return config.env.replace(pretrained=False, pretrained_file=None)


def check_evaluation(students: list[SavedStudent], env: EnvConfig) -> None:
    """Refuse, before any data is read, Students that do not fit ``env`` and settings that cannot run here (device)."""
    for student in students:
        check_fits(student, env)
    check_run_settings(RunConfig(env=env))


def evaluate_students(students: list[SavedStudent], env: EnvConfig) -> list[StudentRun]:
    """Each Student's metrics on every test split of ``env``'s data (loaded once), as a run record with no epochs."""
    check_evaluation(students, env)
    trainer = StudentTrainer(env)
    runs = []
    try:
        for student in students:
            start = time.perf_counter()
            _load_weights(trainer, student, env.backbone)
            test = {split: trainer.evaluate(split) for split in trainer.dataset.test_splits}
            runs.append(StudentRun(student.label, test=test, wall_time_s=time.perf_counter() - start))
    finally:
        trainer.close()
    return runs


def _load_weights(trainer: StudentTrainer, student: SavedStudent, backbone: str) -> None:
    state = torch.load(student.weights, map_location=trainer.device, weights_only=True)
    try:
        trainer.student.load_state_dict(state)
    except RuntimeError as error:
        first_line = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise ValueError(
            f"the weights in {str(student.weights)!r} do not fit a Student of backbone {backbone!r} ({first_line}); "
            "pass --backbone with the backbone it was trained as"
        ) from error
