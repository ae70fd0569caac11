"""The figures of a teaching run: its teaching curve, and the tutor's weight against each state column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from experiments.analysis.figure_style import LABEL_COLOURS, legend, panel_grid, save_figure, shared_legend, tutor_colour


def plot_teaching_curve(curve: list[Any], path: Path) -> Figure:
    """The teaching curve (``experiments.teaching.config.TaughtStudent`` records, in order): the tutor's noise AUROC on each new
    Student before learning from it, and each Student's paired test AUC gain over uniform training. The two panels show
    different series, so each has its own legend. Returns the figure, saved to ``path``."""
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    detection, gain = figure.subplots(1, 2)
    students = [student.index + 1 for student in curve]
    taught, teacher = tutor_colour("ppo"), tutor_colour("oracle")
    detection.plot(students, [student.tutor_noise_auroc for student in curve], "o-", color=taught, label="taught tutor")
    detection.plot(students, [s.acting_noise_auroc for s in curve], "s--", color=teacher, label="weights trained with")
    detection.axhline(0.5, color=tutor_colour("uniform"), linewidth=1, label="chance")
    detection.set(xlabel="Student taught", ylabel="noise AUROC (low weight = flipped)", title="Noise detection on a new Student")
    for name, marker in (("seen", "o-"), ("unseen", "s--")):
        gains = [getattr(student, f"gain_{name}_auc") for student in curve]
        gain.plot(students, gains, marker, color=taught, label=f"{name} AUC")
    gain.axhline(0.0, color=tutor_colour("uniform"), linewidth=1, label="uniform")
    gain.set(xlabel="Student taught", ylabel="test AUC - uniform's (same seed)", title="Paired gain of the Student taught")
    for axis in (detection, gain):
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
        legend(axis)
    return save_figure(figure, path)


def plot_weights_against_columns(
    states: np.ndarray, weights: np.ndarray, flipped: np.ndarray, layout: Any, path: Path, title: str = ""
) -> Figure:
    """The tutor's weight against each single state column, flipped and clean labels apart (at most 3,000 rows each).

    Flipped rows are drawn first and both half-transparent, so neither group hides the other. Returns the figure,
    saved to ``path``."""
    names = [name for name, where in layout.columns.items() if where.stop - where.start == 1 and name not in ("counters",)]
    names += list(layout.parts)
    figure, axes = panel_grid(len(names), columns=4, width=3.3, height=2.9)
    if title:
        figure.suptitle(title)
    rng = np.random.default_rng(0)
    for axis, name in zip(axes, names, strict=True):
        values = layout.values(states, name)
        for mask, label in ((flipped, "flipped"), (~flipped, "clean")):
            rows = np.flatnonzero(mask)
            rows = rng.choice(rows, size=min(3000, len(rows)), replace=False) if len(rows) else rows
            axis.scatter(values[rows], weights[rows], s=4, alpha=0.25, color=LABEL_COLOURS[label], label=label, lw=0)
        axis.set(xlabel=name, ylabel="tutor weight", ylim=(-0.05, 1.05))
    shared_legend(figure, axes)
    for handle in figure.legends[0].legend_handles:
        handle.set(alpha=1.0, sizes=[30])
    return save_figure(figure, path)
