"""Benchmark plots: validation curves, weight distributions, and what each tutor weighted."""

from __future__ import annotations

import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from experiments.record import WEIGHT_BINS, GroupTally, StudentRun

# One fixed colour per tutor in every figure: uniform, the reference every difference is taken against, a neutral grey;
# the oracle black; learned tutors in strong colours, heuristics in others, no two alike.
TUTOR_COLOURS = {
    "uniform": "#7f7f7f",
    "oracle": "#000000",
    "random": "#bcbd22",
    "ppo": "#d62728",
    "sac": "#1f77b4",
    "td3": "#17becf",
    "ddpg": "#9467bd",
    "a2c": "#8c564b",
    "attention": "#e377c2",
    "l2rw": "#00a087",
    "meta_weight_net": "#f39b7f",
    "focal": "#ff7f0e",
    "self_paced": "#2ca02c",
    "hard_mining": "#6b3d9a",
    "anti_noise": "#b15928",
    "noise_mentor": "#3c5488",
    "noise_mentor_pretrained": "#e7298a",
}
# Tutors without a fixed colour draw one from here, chosen by a stable hash of the name (the same in every figure).
SPARE_COLOURS = ("#4dbbd5", "#91d1c2", "#dc0000", "#7e6148", "#b09c85", "#ffd92f", "#66a61e")
# A benchmark entry ``tutor@reward`` keeps its tutor's colour; its reward sets the line style and the bars' hatch.
REWARD_STYLES = {
    None: ("-", ""),
    "tsrl": ("-", ""),
    "tsrl_reference": ("--", "//"),
    "next_visit": (":", ".."),
    "val_alignment": ("-.", "xx"),
}


def tutor_colour(entry: str) -> str:
    """The colour of a tutor (or of a ``tutor@reward`` entry: its tutor's) in every figure."""
    tutor = entry.split("@", 1)[0]
    return TUTOR_COLOURS.get(tutor) or SPARE_COLOURS[zlib.crc32(tutor.encode()) % len(SPARE_COLOURS)]


def _style(entry: str) -> dict[str, Any]:
    """Line keywords for ``entry``: its tutor's colour, and its reward's line style."""
    reward = entry.split("@", 1)[1] if "@" in entry else None
    return {"color": tutor_colour(entry), "linestyle": REWARD_STYLES.get(reward, ("-", ""))[0], "label": entry}


def _legend(axis: Axes) -> None:
    """The panel's own legend, below it, so that it hides no bar or line."""
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)


def _hatch(entry: str) -> str:
    reward = entry.split("@", 1)[1] if "@" in entry else None
    return REWARD_STYLES.get(reward, ("-", "//"))[1]


def _by_variant(records: list[dict[str, Any]]) -> dict[str, dict[str, list[StudentRun]]]:
    grouped: dict[str, dict[str, list[StudentRun]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        grouped[record["variant"]][record["tutor"]].append(record["run"])
    return grouped


def plot_validation_curves(records: list[dict[str, Any]], path: Path) -> Path:
    """Validation AUC per epoch, one panel per variant: mean over seeds, band from min to max."""
    grouped = _by_variant(records)
    figure = Figure(figsize=(6 * len(grouped), 6))
    axes = figure.subplots(1, len(grouped), squeeze=False, sharey=True)
    for axis, (variant, by_tutor) in zip(axes[0], grouped.items(), strict=True):
        for tutor, runs in by_tutor.items():
            length = min(len(run.epochs) for run in runs)
            curves = np.array([[record.val_auc for record in run.epochs[:length]] for run in runs])
            epochs = np.arange(1, length + 1)
            axis.plot(epochs, curves.mean(axis=0), **_style(tutor))
            axis.fill_between(epochs, curves.min(axis=0), curves.max(axis=0), color=tutor_colour(tutor), alpha=0.12)
        warmup = sum(record.phase == "warm-up" for record in next(iter(by_tutor.values()))[0].epochs)
        if warmup:
            axis.axvspan(0.5, warmup + 0.5, color="#dddddd", alpha=0.5, label="warm-up")
        axis.set(title=variant, xlabel="epoch", ylabel="validation AUC")
        axis.grid(alpha=0.3)
        _legend(axis)
    return _save(figure, path)


def plot_weight_distributions(records: list[dict[str, Any]], variant: str, path: Path) -> Path:
    """Per tutor, the share of weights in each of ``WEIGHT_BINS`` bins over [0, 1] for every tutored epoch."""
    by_tutor = _by_variant(records)[variant]
    columns = min(4, len(by_tutor))
    rows = -(-len(by_tutor) // columns)
    figure = Figure(figsize=(3.6 * columns, 2.8 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, (tutor, runs) in zip(axes.flat, by_tutor.items(), strict=False):
        tutored = [[record.weight_histogram for record in run.epochs if record.phase == "tutored"] for run in runs]
        length = min(len(epochs) for epochs in tutored)
        counts = np.sum([np.asarray(epochs[:length], dtype=float) for epochs in tutored], axis=0)
        shares = counts / counts.sum(axis=1, keepdims=True)
        axis.imshow(shares.T, origin="lower", aspect="auto", extent=(0.5, length + 0.5, 0.0, 1.0), cmap="viridis", vmin=0)
        axis.set(title=tutor, xlabel="tutored epoch", ylabel="weight")
    for axis in list(axes.flat)[len(by_tutor) :]:
        axis.axis("off")
    figure.suptitle(f"distribution of weights per epoch ({variant}; {WEIGHT_BINS} bins, share of samples)")
    return _save(figure, path)


def _pooled(runs: list[StudentRun], attribute: str) -> tuple[list[str], np.ndarray]:
    tallies: list[GroupTally] = [getattr(run, attribute) for run in runs]
    sums = np.sum([tally.sums for tally in tallies], axis=0)
    counts = np.sum([tally.counts for tally in tallies], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tallies[0].groups, np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def plot_weighting(records: list[dict[str, Any]], variant: str, tutors: list[str], path: Path) -> Path:
    """Mean weight per tutor as a function of EMA loss, of correctness, of label noise and of manipulation family, and
    how well each tutor's weights flag flipped labels per tutored epoch (noise-detection AUROC).

    Every panel has a legend. ``uniform`` (weight 1 for every sample) is drawn as a grey reference line wherever the
    variant has it, whether or not ``tutors`` names it; a variant without it says so in the title.
    """
    by_tutor = _by_variant(records)[variant]
    tutors = [tutor for tutor in tutors if tutor in by_tutor and tutor != "uniform"]
    has_uniform = "uniform" in by_tutor
    figure = Figure(figsize=(26, 7))
    axes = figure.subplots(1, 5, gridspec_kw={"width_ratios": [2.2, 1, 1, 1.8, 1.4]})
    groups: list[str] = []
    for tutor in tutors:
        groups, means = _pooled(by_tutor[tutor], "weight_by_ema_loss")
        axes[0].plot(range(len(groups)), means, marker="o", **_style(tutor))
    axes[0].set_xticks(range(len(groups)), groups, rotation=45, fontsize=8)
    axes[0].set(title="mean weight vs EMA loss", xlabel="EMA loss bin", ylabel="mean weight", ylim=(0, 1.1))
    for axis, attribute, title in (
        (axes[1], "weight_by_correct", "vs correctness at the forward"),
        (axes[2], "weight_by_label_noise", "clean vs flipped labels"),
        (axes[3], "weight_by_family", "per manipulation family"),
    ):
        width = 0.8 / max(1, len(tutors))
        pooled = {tutor: _pooled(by_tutor[tutor], attribute) for tutor in tutors}
        groups = next(iter(pooled.values()))[0] if pooled else []
        # Groups no training sample belongs to (families held out for test_unseen, no flipped label) are left out.
        shown = [i for i in range(len(groups)) if any(not np.isnan(means[i]) for _, means in pooled.values())]
        for index, (tutor, (_, means)) in enumerate(pooled.items()):
            axis.bar(
                np.arange(len(shown)) + index * width - 0.4 + width / 2,
                means[shown],
                width,
                color=tutor_colour(tutor),
                hatch=_hatch(tutor),
                edgecolor="white" if not _hatch(tutor) else "#333333",
                linewidth=0.3,
                label=tutor,
            )
        axis.set_xticks(range(len(shown)), [groups[i] for i in shown], rotation=30, fontsize=8)
        axis.set(title=title, ylabel="mean weight", ylim=(0, 1.1))
    for axis in axes[:4]:
        if has_uniform:
            axis.axhline(1.0, color=TUTOR_COLOURS["uniform"], linestyle="--", linewidth=1.2, label="uniform (weight 1)")
        _legend(axis)
    _plot_noise_detection(axes[4], {tutor: by_tutor[tutor] for tutor in tutors}, has_uniform)
    missing = "" if has_uniform else "; uniform not in this grid"
    figure.suptitle(f"what the tutors weighted ({variant}, pooled over seeds, tutored epochs{missing})")
    return _save(figure, path)


def _plot_noise_detection(axis: Axes, runs_by_tutor: dict[str, list[StudentRun]], has_uniform: bool = False) -> None:
    """Per tutored epoch, the mean over seeds of the AUROC with which low weights flag flipped labels; constant
    weights (``uniform``'s) score 0.5, the dotted line."""
    axis.set(title="flipped labels flagged by low weight", xlabel="tutored epoch", ylabel="noise-detection AUROC", ylim=(0, 1.05))
    chance = "uniform (constant weights) = chance, 0.5" if has_uniform else "chance, 0.5"
    axis.axhline(0.5, color=TUTOR_COLOURS["uniform"], linewidth=1.2, linestyle=":", label=chance)
    plotted = False
    for tutor, runs in runs_by_tutor.items():
        curves = np.array([[e.noise_auroc for e in run.epochs if e.phase == "tutored"] for run in runs], dtype=float)
        if curves.size and not np.isnan(curves).all():
            axis.plot(range(1, curves.shape[1] + 1), np.nanmean(curves, axis=0), marker="o", **_style(tutor))
            plotted = True
    if not plotted:
        axis.text(0.5, 0.5, "no flipped label", ha="center", va="center", transform=axis.transAxes)
    _legend(axis)


def plot_teaching_curve(curve: list[Any], path: Path) -> Path:
    """The teaching curve (``experiments.teach.TaughtStudent`` records, in order): the tutor's noise AUROC on each new
    Student before learning from it, and each Student's paired test AUC gain over uniform training."""
    figure = Figure(figsize=(10, 3.6))
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
        _legend(axis)
    return _save(figure, path)


def plot_weights_against_columns(
    states: np.ndarray, weights: np.ndarray, flipped: np.ndarray, layout: Any, path: Path, title: str = ""
) -> Path:
    """The tutor's weight against each single state column, flipped and clean labels apart (at most 3,000 rows each)."""
    names = [name for name, where in layout.columns.items() if where.stop - where.start == 1 and name not in ("counters",)]
    names += list(layout.parts)
    columns = (len(names) + 1) // 2
    figure = Figure(figsize=(3.2 * columns, 7.0))
    axes = np.atleast_1d(figure.subplots(2, columns)).ravel()
    for unused in axes[len(names) :]:
        unused.set_visible(False)
    if title:
        figure.suptitle(title)
    rng = np.random.default_rng(0)
    for axis, name in zip(axes, names, strict=False):
        values = layout.values(states, name)
        for mask, label, colour in ((~flipped, "clean", tutor_colour("uniform")), (flipped, "flipped", tutor_colour("ppo"))):
            rows = np.flatnonzero(mask)
            rows = rng.choice(rows, size=min(3000, len(rows)), replace=False) if len(rows) else rows
            axis.scatter(values[rows], weights[rows], s=3, alpha=0.3, color=colour, label=label)
        axis.set(xlabel=name, ylabel="tutor weight", ylim=(-0.05, 1.05))
        _legend(axis)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
