"""The files of a teaching run, written so that a run stopped anywhere continues where it was, and read back.

``teaching.json`` (the record: the teaching config and one :class:`TaughtStudent` per Student taught, the teaching
curve), ``examples.npz`` (the aggregated state rows and teacher weights), ``tutor.zip`` and ``tutor.json`` (the tutor
and the env settings of the state it reads). The record is the commit point of each Student, and the files are written
(each atomically) in the order a rerun can always continue from, whatever the point where the process died
(:func:`commit_student`):

1. ``examples.npz``, every row so far: a rerun reads only as many rows as the record counts, so rows of a Student
   not yet recorded are never taught on;
2. ``tutor.json``, and the new tutor as ``tutor.next.zip`` beside the tutor the record names;
3. ``teaching.json``, with the SHA-256 of the new tutor: the Student is taught;
4. ``tutor.zip``, the new tutor (then ``tutor.next.zip`` goes). A rerun that finds ``tutor.zip`` older than the
   record finishes this step from ``tutor.next.zip``, and drops a ``tutor.next.zip`` that the record does not name
   (:func:`read_teaching_run`).

The environment variable :data:`FAULT_VARIABLE` kills the process at a named point between those writes
(:func:`_fault_point`), as a power cut would: how the tests check that a rerun continues from every one of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.config import plain
from experiments.records.provenance import code_version, sha256
from tsrl_env.config import EnvConfig
from tsrl_env.files import write_atomically
from tsrl_env.validation import setting_differences

RECORD, EXAMPLES, TUTOR, TUTOR_SETTINGS = "teaching.json", "examples.npz", "tutor.zip", "tutor.json"
STAGED_TUTOR = "tutor.next.zip"
"""The tutor of the Student being recorded, until ``teaching.json`` names it (see the write order above)."""

FAULT_VARIABLE = "TSRL_FAULT"
FAULT_POINTS = ("after_examples_saved", "after_tutor_staged", "after_record_saved", "after_tutor_saved")
"""Where ``TSRL_FAULT=POINT`` (any Student) or ``TSRL_FAULT=POINT:N`` (the N-th Student, from 1) kills the run."""


@dataclass
class TaughtStudent:
    """One point of the teaching curve: the Student taught, how it was weighted, and how it did.

    ``tutor_noise_auroc`` is how well the tutor's own weights (before it learned from this Student) flag the flipped
    labels of a Student it had not yet learned from (under a protocol, on a dataset of its own; without one, a
    Student shares its images and flips with the earlier Students of its label noise); ``acting_noise_auroc`` that
    of the weights the Student was trained with (the teacher's share ``teacher_share`` blended with the tutor's).
    ``gain_*`` are paired: test AUC minus that of a uniform-weight Student at the same seed. ``noise_model`` is the
    label-noise model of its dataset (None: the data source's default; records written before it was kept have none).
    """

    index: int
    seed: int
    label_noise: float
    teacher_share: float
    tutor_noise_auroc: float
    acting_noise_auroc: float
    tutor_weight_flipped: float
    tutor_weight_clean: float
    seen_auc: float
    unseen_auc: float
    uniform_seen_auc: float
    uniform_unseen_auc: float
    gain_seen_auc: float
    gain_unseen_auc: float
    examples: int
    imitation_loss: float
    wall_time_s: float
    noise_model: str | None = None


def commit_student(
    out: Path,
    config: dict[str, Any],
    curve: list[TaughtStudent],
    examples: dict[str, np.ndarray],
    tutor: Any,
    tutor_settings: dict[str, Any],
    resume_command: str,
) -> None:
    """Record the Students of ``curve`` taught under ``config`` (the teaching settings), the last one new, with the
    examples and the tutor after it (``tutor_settings``: what ``tutor.json`` says), in the order of the module's
    docstring; a file that cannot be written leaves the record as it was and says so, naming ``resume_command``."""
    arrays, model = io.BytesIO(), io.BytesIO()
    np.savez_compressed(arrays, **examples)
    tutor.save(model)
    record = {
        "config": config,
        "students": [asdict(s) for s in curve],
        "tutor_sha256": hashlib.sha256(model.getvalue()).hexdigest(),
        "code": code_version(),
    }
    writes = [
        (EXAMPLES, arrays.getvalue(), "after_examples_saved"),
        (TUTOR_SETTINGS, json.dumps(tutor_settings, indent=2), None),
        (STAGED_TUTOR, model.getvalue(), "after_tutor_staged"),
        (RECORD, json.dumps(record, indent=2), "after_record_saved"),
        (TUTOR, model.getvalue(), "after_tutor_saved"),
    ]
    write_in_order(out, writes, RECORD, len(curve), resume_command)


def write_in_order(
    out: Path, writes: list[tuple[str, bytes | str, str | None]], record: str, student: int, resume_command: str
) -> None:
    """Write each ``(name, data, fault point)`` of ``writes`` atomically into ``out``, in order (staged tutor, the
    ``record`` naming it, the tutor: the module's docstring), then drop the staged tutor; Student ``student`` (from 1)
    is the one being recorded. A file that cannot be written raises an OSError saying what the record keeps and naming
    ``resume_command``; a fault point set by :data:`FAULT_VARIABLE` kills the process after its write."""
    for name, data, point in writes:
        try:
            write_atomically(out / name, data)
        except OSError as error:
            kept = f"{record} keeps the {student - 1} Student(s) taught before" if student > 1 else "no Student is recorded"
            if name == TUTOR:
                kept = f"{record} records Student {student}, whose tutor is {STAGED_TUTOR}"
            raise OSError(
                error.errno,
                f"cannot write {str(out / name)!r} ({error.strerror or error}); {kept}: free space on its disk (or fix "
                f"its permissions) and continue with: {resume_command}",
            ) from error
        if point is not None:
            _fault_point(point, student)
    (out / STAGED_TUTOR).unlink()


def _fault_point(point: str, student: int) -> None:
    """Kill this process with SIGKILL (no clean-up, as a power cut or the kernel's OOM killer) when the environment
    variable ``TSRL_FAULT`` names ``point`` (one of :data:`FAULT_POINTS`), alone or as ``point:N`` with ``N`` the
    Student being recorded (from 1). The one place that variable is read; unset, this does nothing."""
    if os.environ.get(FAULT_VARIABLE) in (point, f"{point}:{student}"):
        os.kill(os.getpid(), signal.SIGKILL)


def read_teaching_run(out: Path, config: dict[str, Any]) -> tuple[list[TaughtStudent], dict[str, np.ndarray | None]]:
    """The Students recorded in ``out`` and the examples they left, once the files agree with the record: a tutor
    recorded but not yet moved in place is moved, rows and a tutor the record does not name are dropped. A record of
    other teaching settings than ``config`` is refused, naming the settings that differ."""
    record = read_teaching_record(out)
    if record is None:
        (out / STAGED_TUTOR).unlink(missing_ok=True)  # of a first Student never recorded
        return [], {"states": None, "targets": None}
    differences = _config_differences(record["config"], config)
    if differences:
        raise ValueError(
            f"{out / RECORD} was written by another teaching config ({'; '.join(differences)}): give the settings it was "
            "written with, teach into another --out, or delete that directory to start again"
        )
    curve = [TaughtStudent(**student) for student in record["students"]]
    settle_tutor(out, record.get("tutor_sha256"))
    rows = curve[-1].examples if curve else 0
    try:
        with np.load(out / EXAMPLES) as saved:
            examples = {"states": saved["states"][:rows], "targets": saved["targets"][:rows]}
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"the examples {str(out / EXAMPLES)!r} of the {len(curve)} Students recorded cannot be read "
            f"({type(error).__name__}: {error}); restore a good copy, or delete {out} to teach again"
        ) from error
    if len(examples["targets"]) < rows:
        raise ValueError(
            f"the examples {str(out / EXAMPLES)!r} hold {len(examples['targets'])} rows where {out / RECORD} counts "
            f"{rows}; restore a good copy, or delete {out} to teach again"
        )
    return curve, examples


def _config_differences(saved: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """``"setting: saved -> now"`` for each teaching setting that differs; an env setting added since the record was
    written is taken at its default, which keeps the results it had before the setting existed (as a Student's
    fingerprint is compared, :func:`~experiments.config.fingerprint_differences`)."""
    defaults = plain(EnvConfig().to_dict())
    env = {**{key: defaults[key] for key in config["env"] if key in defaults}, **(saved.get("env") or {})}
    return setting_differences({**saved, "env": env}, config)


def read_teaching_record(out: Path) -> dict[str, Any] | None:
    """``teaching.json`` of ``out``, None where there is none yet; one that cannot be read is refused naming it."""
    path = out / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("students"), list):
            raise ValueError(f"it holds no list of Students taught, found {type(record).__name__}")
        for student in record["students"]:
            TaughtStudent(**student)
        return record
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"the teaching record {str(path)!r} cannot be read ({type(error).__name__}: {error}); restore a good copy, "
            f"or delete {out} to teach again"
        ) from error


def settle_tutor(out: Path, recorded: str | None) -> None:
    """Leave in ``tutor.zip`` the tutor the record names (by its SHA-256; a record written before those were kept
    names none): the staged one where the run died before moving it, and drop a staged one never recorded."""
    staged, final = out / STAGED_TUTOR, out / TUTOR
    if recorded is None:
        return
    if staged.is_file():
        if sha256(staged) == recorded and (not final.is_file() or sha256(final) != recorded):
            write_atomically(final, staged.read_bytes())
        staged.unlink()
    if not final.is_file() or sha256(final) != recorded:
        raise ValueError(
            f"the tutor {str(final)!r} is not the one {out / RECORD} records (SHA-256 {recorded[:12]}…); restore the "
            f"tutor of that run, or delete {out} to teach again"
        )
