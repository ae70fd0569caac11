"""``tsrl evaluate``: saved Students tested on the test splits of any dataset config, side by side.

The DeepfakeBench protocol trains on one dataset and tests on others (FaceForensics++ c23, then Celeb-DF-v2, DFDC, …):
a Student saved by ``tsrl train`` (its ``student.pt``, its folder, or the whole run directory) is scored on the test
splits of the config given, with the metrics ``tsrl train`` reports, one column per Student.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from experiments.config import RunConfig, load_run_config
from experiments.preflight import check_run_settings
from experiments.records.student_run import StudentRun
from tsrl_env.config import EnvConfig
from tsrl_env.data import data_source
from tsrl_env.trainer import StudentTrainer

STUDENT_FILE = "student.pt"
STUDENT_SETTINGS_KEY = "env"
"""A Student's file holds its state dict, or ``{"state_dict": ..., "env": settings}``: the weights with the env
settings it was trained with, which let a copy of the file alone be checked against the evaluation's settings."""

logger = logging.getLogger(__name__)


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
    """The Student saved at ``weights``, with the settings it was trained with from the first place that has them: its
    run's ``config.yaml``, the file itself, or the record (``run.json``) of its folder."""
    run_config = weights.parent.parent / "config.yaml"
    if run_config.is_file():
        return SavedStudent(f"{weights.parent.parent.name}/{weights.parent.name}", weights, load_run_config(run_config).env)
    trained_with = read_student_weights(weights)[1] or _recorded_settings(weights.parent / "run.json")
    return SavedStudent(weights.parent.name or weights.stem, weights, trained_with)


def read_student_weights(path: Path) -> tuple[dict[str, torch.Tensor], EnvConfig | None]:
    """The state dict in a Student's file and the env settings stored with it (None where the file holds weights
    alone); a file that is not a Student's weights is refused in one line naming it."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file that is not its own, some with lines of advice
        reason = str(error).strip().split("\n")[0].split(". ")[0]
        raise ValueError(
            f"{str(path)!r} is not a Student's weights ({type(error).__name__}: {reason}); give a {STUDENT_FILE} that "
            "tsrl train saved"
        ) from None
    settings = saved.get(STUDENT_SETTINGS_KEY) if isinstance(saved, dict) else None
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else saved
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(
            f"{str(path)!r} is not a Student's weights (it holds a {type(state).__name__}, not a state dict of tensors); "
            f"give a {STUDENT_FILE} that tsrl train saved"
        )
    return state, EnvConfig.from_dict(settings) if isinstance(settings, dict) else None


def _recorded_settings(record: Path) -> EnvConfig | None:
    """The env settings in the fingerprint of a Student's record; None where there is no readable one."""
    try:
        return EnvConfig.from_dict(json.loads(record.read_text())["fingerprint"]["env"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


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


def own_test_data(students: list[SavedStudent]) -> EnvConfig:
    """The env settings the Students were trained with, where no config names the test data: they must be known and
    name the same data for every Student."""
    unknown = [student.label for student in students if student.trained_with is None]
    if unknown:
        raise ValueError(
            f"the settings {', '.join(unknown)} were trained with are not recorded (no config.yaml of its run, no run.json "
            "beside it); give the test data with --config"
        )
    data = {(student.trained_with.dataset, repr(student.trained_with.dataset_options)) for student in students}
    if len(data) > 1:
        raise ValueError("the Students were trained on different data; give the test data with --config")
    return students[0].trained_with


def evaluation_config(config: RunConfig) -> EnvConfig:
    """The env settings Students are evaluated with: ``config``'s, never downloading weights the Students replace."""
    return config.env.replace(pretrained=False, pretrained_file=None)


def check_evaluation(students: list[SavedStudent], env: EnvConfig) -> None:
    """Refuse, before any data is read, Students that do not fit ``env`` and settings that cannot run here (device)."""
    for student in students:
        check_fits(student, env)
    check_run_settings(RunConfig(env=env))


def evaluate_students(students: list[SavedStudent], env: EnvConfig) -> list[StudentRun]:
    """Each Student's metrics on every test split of ``env``'s data (loaded once), as a run record with no epochs.
    A Student whose training settings nothing records is evaluated as given, with a warning that says so."""
    check_evaluation(students, env)
    for student in students:
        if student.trained_with is None:
            logger.warning(
                "the settings %s was trained with are not known (no config.yaml of its run, no run.json beside it, none "
                "in the file): it is evaluated as backbone %r at %s px, unchecked",
                student.label,
                env.backbone,
                input_size(env),
            )
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
    state = read_student_weights(student.weights)[0]
    try:
        trainer.student.load_state_dict(state)
    except RuntimeError as error:
        first_line = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise ValueError(
            f"the weights in {str(student.weights)!r} do not fit a Student of backbone {backbone!r} ({first_line}); "
            "pass --backbone with the backbone it was trained as"
        ) from error
