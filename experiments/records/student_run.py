"""The record of one Student's training: its per-epoch curve, test metrics and what the tutor weighted.

A :class:`StudentRun` is what :class:`~experiments.records.recorder.CurriculumRecorder` builds from the environment's
steps, kept as sums and histograms (a few kilobytes whatever the dataset size). Two files hold finished ones:
a Student's ``run.json`` (``tsrl train``, a grid cell's Student) and a grid cell's ``record.json``;
:func:`read_record` reads either.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tsrl_env.files import write_atomically

WEIGHT_BINS = 20
TALLY_PREFIXES = ("weight_by_", "reward_by_")
PROVENANCE_KEYS = ("fingerprint", "code", "environment")
"""What a Student's ``run.json`` holds beside its run's fields: what produced it (:mod:`experiments.records.provenance`)."""
FINISHED_STUDENT = ("the finished Student's record", "restore a good copy, or delete its folder to train this Student again")
"""How :func:`read_record` names a Student's ``run.json`` it cannot read, and what it tells the user to do."""


@dataclass
class EpochRecord:
    """One Student epoch as the tables report it."""

    epoch: int
    phase: str  # "warm-up" or "tutored"
    val_auc: float
    mean_weight: float
    mean_reward: float  # NaN in warm-up, and where the tutor read no reward and none was recorded
    student_loss: float = float("nan")
    weight_histogram: list[int] = field(default_factory=list)  # WEIGHT_BINS counts over [0, 1]
    # AUROC of low weight for a flipped label, and of each state column alone (tutored epochs with label noise).
    noise_auroc: float = float("nan")
    state_column_auroc: dict[str, float] = field(default_factory=dict)


@dataclass
class GroupTally:
    """Sum and count of a per-sample value (the weights given, the rewards paid) per group of samples, so means can be
    pooled over runs."""

    groups: list[str]
    sums: list[float]
    counts: list[int]

    @classmethod
    def empty(cls, groups: list[str]) -> GroupTally:
        return cls(list(groups), [0.0] * len(groups), [0] * len(groups))

    def add(self, group_index: np.ndarray, values: np.ndarray) -> None:
        n = len(self.groups)
        self.sums = (np.asarray(self.sums) + np.bincount(group_index, values, minlength=n)).tolist()
        self.counts = (np.asarray(self.counts) + np.bincount(group_index, minlength=n)).tolist()

    def means(self) -> dict[str, float]:
        return {g: s / c if c else float("nan") for g, s, c in zip(self.groups, self.sums, self.counts, strict=True)}


@dataclass
class StudentRun:
    """What one Student's training produced: per-epoch records, test metrics and the weights' analysis."""

    label: str
    epochs: list[EpochRecord] = field(default_factory=list)
    test: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_time_s: float = 0.0
    weight_by_ema_loss: GroupTally | None = None
    weight_by_correct: GroupTally | None = None
    weight_by_label_noise: GroupTally | None = None
    weight_by_family: GroupTally | None = None
    reward_by_label_noise: GroupTally | None = None  # the tutor's per-sample rewards, clean vs flipped labels
    # AUROC of a sample's mean weight over the tutored epochs (low = flagged) for a flipped label.
    noise_auroc: float = float("nan")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentRun:
        tallies = {key: GroupTally(**value) for key, value in data.items() if key.startswith(TALLY_PREFIXES) and value}
        epochs = [EpochRecord(**record) for record in data.get("epochs", [])]
        rest = {k: v for k, v in data.items() if k != "epochs" and not k.startswith(TALLY_PREFIXES)}
        return cls(epochs=epochs, **rest, **tallies)


class StudentRecord(NamedTuple):
    """What :func:`read_record` reads from a finished Student's file."""

    run: StudentRun
    fingerprint: dict[str, Any] | None
    """None in a record written before fingerprints."""
    same_student_as: str | None
    """In a grid cell's record whose Student another cell trained: that cell's folder, relative to the grid."""
    environment: dict[str, Any] | None = None
    """The numeric environment it ran in (:func:`~experiments.records.provenance.numeric_environment`); None in a
    record written before records named it."""


def read_record(path: Path, what: str, remedy: str) -> StudentRecord:
    """A finished Student's run and its fingerprint, from a Student's ``run.json`` (the run's fields beside its
    :data:`PROVENANCE_KEYS`) or a grid cell's ``record.json`` (the run under ``run``, beside the cell's tutor, seed and
    provenance).

    A file that cannot be read raises a ValueError naming it as ``what`` and saying ``remedy``.
    """
    try:
        data = json.loads(path.read_text())
        run = data["run"] if "run" in data else {key: value for key, value in data.items() if key not in PROVENANCE_KEYS}
        return StudentRecord(
            StudentRun.from_dict(run), data.get("fingerprint"), data.get("same_student_as"), data.get("environment")
        )
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(f"{what} {str(path)!r} cannot be read ({type(error).__name__}: {error}); {remedy}") from error


def save_results(runs: list[StudentRun], run_dir: Path) -> None:
    """``results.json`` of a run directory: every Student's run, in order (what ``tsrl evaluate`` orders them by)."""
    write_atomically(run_dir / "results.json", json.dumps([asdict(run) for run in runs], indent=2))
