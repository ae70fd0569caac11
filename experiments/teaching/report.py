"""The report of a teaching run, rebuilt from its files alone: ``teaching.md`` (the teaching curve as a table),
``plots/teaching_curve.png`` and ``plots/tutor_weights.png`` (the tutor's weight against each state column on the last
Student's rows)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from agents import load_tutor
from experiments.report import markdown_table
from experiments.teaching.files import EXAMPLES, RECORD, TUTOR, TaughtStudent, read_teaching_record, settle_tutor
from experiments.teaching.plots import plot_teaching_curve, plot_weights_against_columns
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.config import EnvConfig
from tsrl_env.files import write_atomically


def write_teaching_report(out: Path) -> str:
    """Write ``teaching.md`` and the two plots of a teaching run in ``out`` from its files; returns the markdown."""
    saved = read_teaching_record(out)
    if saved is None or not saved["students"]:
        raise FileNotFoundError(f"{out} holds no Student taught ({RECORD}); teach first: tsrl teach --out {out}")
    settle_tutor(out, saved.get("tutor_sha256"))  # the tutor the record names, never one a killed run left behind
    curve = [TaughtStudent(**student) for student in saved["students"]]
    columns = [
        "index",
        "seed",
        "label_noise",
        "noise_model",
        "teacher_share",
        "tutor_noise_auroc",
        "tutor_weight_flipped",
        "tutor_weight_clean",
        "acting_noise_auroc",
        "seen_auc",
        "gain_seen_auc",
        "unseen_auc",
        "gain_unseen_auc",
        "examples",
        "imitation_loss",
        "wall_time_s",
    ]
    rows = [[_cell(getattr(student, name)) for name in columns] for student in curve]
    lines = [
        "# Teaching curve",
        "",
        "One row per Student taught, in order. `tutor_*`: the tutor's own weights on a Student it had not yet learned from "
        "(its noise AUROC: how well a low weight flags a flipped label); `acting_noise_auroc`: the weights the Student was "
        "trained with (the teacher's share blended with the tutor's); `gain_*`: paired, test AUC minus a uniform-weight "
        "Student's at the same seed. Teaching seeds; nothing here is an evaluation seed.",
        "",
        markdown_table(columns, rows),
        "",
        f"Compute: {sum(student.wall_time_s for student in curve) / 60:.0f} min of one process for {len(curve)} Students "
        "(each trained taught and, for the paired gain, with uniform weights).",
    ]
    text = "\n".join(lines) + "\n"
    write_atomically(out / "teaching.md", text)
    (out / "plots").mkdir(exist_ok=True)
    plot_teaching_curve(curve, out / "plots" / "teaching_curve.png")
    # The tutor's weights on the rows of the last Student with wrong labels to find.
    pictured = next((student for student in reversed(curve) if student.label_noise > 0), curve[-1])
    rows = slice(curve[pictured.index - 1].examples if pictured.index else 0, pictured.examples)
    examples = np.load(out / EXAMPLES)
    states = examples["states"][rows]
    tutor = load_tutor(saved["config"]["tutor"], out / TUTOR)
    weights = np.asarray(tutor.predict(states, deterministic=True)[0], np.float32).ravel()
    # Every teaching Student's state layout, which the starting weights do not change: no weights file is needed.
    env = DeepfakeCurriculumEnv(EnvConfig.from_dict({**saved["config"]["env"], "pretrained_file": None}))
    layout = env.state_layout
    env.close()
    title = (
        f"the final tutor on teaching Student {pictured.index + 1} (seed {pictured.seed}, label noise {pictured.label_noise:.2f})"
    )
    plot_weights_against_columns(
        states, weights, examples["targets"][rows] < 0.5, layout, out / "plots" / "tutor_weights.png", title
    )
    return text


def _cell(value: Any) -> str:
    """A value as a cell of the teaching table: floats to three decimals, NaN and None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)
