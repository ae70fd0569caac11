"""Benchmark plots: validation curves, weight distributions, what each tutor weighted, and the paired differences.

Every figure draws a tutor in the one colour :func:`tutor_colour` gives it and names every tutor it draws in a legend
(one legend beside the panels where they all show the same tutors, so that it is read once and in full). Axes keep to
the bulk of the data: a curve or an interval far outside the rest is cut at the panel's edge with its name and value
written there (:func:`robust_limits`), so that one diverging tutor does not flatten the others into one band.

``python -m experiments.plots RESULTS_CSV OUT_PNG`` draws the paired-difference plot of a finished grid from its
``results.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from experiments.record import WEIGHT_BINS, StudentRun
from experiments.report import split_label
from experiments.summary import POOLED, REFERENCE
from tsrl_env.files import write_atomically

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
    "small_loss": "#e6ab02",
    "aum_filter": "#4dbbd5",
    "probe": "#66a61e",
    "trusted_union": "#7e6148",
    "noise_mentor": "#3c5488",
    "noise_mentor_pretrained": "#e7298a",
}
# Tutors without a fixed colour draw one from here, chosen by a stable hash of the name (the same in every figure).
SPARE_COLOURS = ("#91d1c2", "#dc0000", "#b09c85", "#ffd92f", "#cab2d6", "#fb9a99", "#b2df8a")
# A benchmark entry ``tutor@reward`` keeps its tutor's colour; its reward sets the line style and the bars' hatch.
REWARD_STYLES = {
    None: ("-", ""),
    "tsrl": ("-", ""),
    "tsrl_reference": ("--", "//"),
    "next_visit": (":", ".."),
    "val_alignment": ("-.", "xx"),
}
# Clean and flipped labels in the scatter plots of a tutor's weights (not tutors: colours no tutor has).
LABEL_COLOURS = {"clean": "#4477aa", "flipped": "#ee7733"}
# How a variant's name reads in a title: the first pattern that matches the whole name, or the name as it is.
VARIANT_TITLES = ((re.compile(r"noise_(\d+(?:\.\d+)?)"), "label noise {}"),)
# Up to this many tutors a panel of curves shades each one's spread over seeds; more bands hide the curves.
BANDED_TUTORS = 4
# Verdicts that results.md sets in bold: the paired-difference plot fills these markers.
JUDGED = ("better", "worse")


def tutor_colour(entry: str) -> str:
    """The colour of a tutor (or of a ``tutor@reward`` entry: its tutor's) in every figure."""
    tutor = entry.split("@", 1)[0]
    return TUTOR_COLOURS.get(tutor) or SPARE_COLOURS[zlib.crc32(tutor.encode()) % len(SPARE_COLOURS)]


def variant_title(variant: str) -> str:
    """A variant's name as a title reads it: ``noise_0.30`` as ``label noise 0.30``."""
    for pattern, title in VARIANT_TITLES:
        match = pattern.fullmatch(variant)
        if match:
            return title.format(*match.groups())
    return variant


def robust_limits(
    values: Iterable[float], quantile: float = 0.1, reach: float = 2.0, stretch: float = 1.5, margin: float = 0.06
) -> tuple[float, float]:
    """Axis limits for the bulk of ``values``, plus ``margin`` of their range on each side.

    The bulk is the values within the ``quantile`` and ``1 - quantile`` quantiles widened on each side by ``reach``
    times their distance; the values outside it are left out only where showing them would make the range more than
    ``stretch`` times the bulk's. Up to a ``quantile`` share of the values on either side can so lie anywhere without
    flattening the others, while values a little apart, such as the early epochs of a learning curve, stay in view.
    NaN and infinite values are ignored; with none left the limits are (0, 1).
    """
    finite = np.asarray([value for value in values if math.isfinite(value)], dtype=float)
    if not finite.size:
        return 0.0, 1.0
    low, high = np.quantile(finite, [quantile, 1.0 - quantile])
    spread = high - low
    bulk = finite[(finite >= low - reach * spread) & (finite <= high + reach * spread)]
    low, high = bulk.min(), bulk.max()
    if np.ptp(finite) <= stretch * (high - low):
        low, high = finite.min(), finite.max()
    pad = margin * (high - low) if high > low else max(0.05 * abs(high), 0.01)
    return float(low - pad), float(high + pad)


def _style(entry: str) -> dict[str, Any]:
    """Line keywords for ``entry``: its tutor's colour, and its reward's line style."""
    reward = entry.split("@", 1)[1] if "@" in entry else None
    return {"color": tutor_colour(entry), "linestyle": REWARD_STYLES.get(reward, ("-", ""))[0], "label": entry}


def _hatch(entry: str) -> str:
    reward = entry.split("@", 1)[1] if "@" in entry else None
    return REWARD_STYLES.get(reward, ("-", "//"))[1]


def _legend(axis: Axes) -> None:
    """The panel's own legend, for panels that show different things from their neighbours."""
    axis.legend(fontsize=8, loc="best", framealpha=0.85)


def _shared_legend(figure: Figure, axes: Sequence[Axes]) -> None:
    """One legend beside the panels naming every line, bar and band they label, each once, in the order drawn."""
    entries: dict[str, Any] = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    figure.legend(list(entries.values()), list(entries), loc="outside right center", fontsize=9, frameon=False)


def _panel_grid(count: int, columns: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A figure of ``count`` panels wrapped into rows of at most ``columns``, each panel ``width`` x ``height``
    inches; the unused cells of the last row are hidden."""
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    figure = Figure(figsize=(width * columns + 2.0, height * rows + 0.6), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for unused in axes[count:]:
        unused.set_visible(False)
    return figure, axes[:count]


def _mark_outliers(axis: Axes, curves: dict[str, tuple[np.ndarray, np.ndarray]], limits: tuple[float, float]) -> None:
    """Write at the panel's top or bottom edge the name and most extreme value of each curve that leaves ``limits``,
    in its tutor's colour, above the epoch where it is reached."""
    low, high = limits
    stacked = {"below": 0, "above": 0}
    for name, (x, y) in curves.items():
        for side, outside, extreme in (("below", y < low, np.nanargmin), ("above", y > high, np.nanargmax)):
            if not np.any(outside):
                continue
            where = int(extreme(y))
            offset = 0.035 + 0.075 * stacked[side]
            stacked[side] += 1
            axis.text(
                x[where],
                offset if side == "below" else 1.0 - offset,
                f"{'↓' if side == 'below' else '↑'} {name} {y[where]:.2f}",
                transform=axis.get_xaxis_transform(),
                color=tutor_colour(name),
                fontsize=8,
                ha="left" if x[where] <= np.mean(axis.get_xlim()) else "right",
                va="bottom" if side == "below" else "top",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.0},
            )


def _by_variant(records: list[dict[str, Any]]) -> dict[str, dict[str, list[StudentRun]]]:
    """Runs per variant and tutor; the runs of every evaluation dataset of a variant are pooled."""
    grouped: dict[str, dict[str, list[StudentRun]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        grouped[record["variant"]][record["tutor"]].append(record["run"])
    return grouped


def _pooling(records: list[dict[str, Any]], variant: str) -> str:
    """What a panel of ``variant`` pools besides seeds, for its title: its evaluation datasets, if any."""
    datasets = sorted({record["dataset"] for record in records if record["variant"] == variant and "dataset" in record})
    if len(datasets) > 1:
        return f", {len(datasets)} datasets pooled"
    return f", dataset {datasets[0]}" if datasets else ""


def plot_validation_curves(records: list[dict[str, Any]], path: Path) -> Figure:
    """Validation AUC per epoch, one panel per variant (its evaluation datasets pooled): the mean over seeds, with a
    band from min to max where a panel has at most :data:`BANDED_TUTORS` tutors. Each panel's y-limits hold the bulk
    of the mean curves; a curve outside them is named at the panel's edge with its extreme value. Returns the figure,
    saved to ``path``."""
    grouped = _by_variant(records)
    banded = max(len(by_tutor) for by_tutor in grouped.values()) <= BANDED_TUTORS
    figure, axes = _panel_grid(len(grouped), columns=3, width=5.0, height=3.8)
    for axis, (variant, by_tutor) in zip(axes, grouped.items(), strict=True):
        means: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        shown: list[np.ndarray] = []  # what the y-limits must hold: the mean curves, and the bands where drawn
        for tutor, runs in by_tutor.items():
            length = min(len(run.epochs) for run in runs)
            curves = np.array([[record.val_auc for record in run.epochs[:length]] for run in runs])
            epochs = np.arange(1, length + 1)
            means[tutor] = (epochs, curves.mean(axis=0))
            shown += [means[tutor][1], curves.min(axis=0), curves.max(axis=0)] if banded else [means[tutor][1]]
            axis.plot(epochs, means[tutor][1], linewidth=1.6, **_style(tutor))
            if banded:
                axis.fill_between(epochs, curves.min(axis=0), curves.max(axis=0), color=tutor_colour(tutor), alpha=0.12, lw=0)
        warmup = sum(record.phase == "warm-up" for record in next(iter(by_tutor.values()))[0].epochs)
        if warmup:
            axis.axvspan(0.5, warmup + 0.5, color="#dddddd", alpha=0.5, label="warm-up (weight 1)")
        limits = robust_limits(np.concatenate(shown))
        axis.set_ylim(limits)
        _mark_outliers(axis, means, limits)
        axis.set(title=variant_title(variant) + _pooling(records, variant), xlabel="epoch", ylabel="validation AUC")
        axis.grid(alpha=0.3)
    _shared_legend(figure, axes)
    figure.suptitle("Validation AUC per epoch: mean over seeds" + (", band from min to max" if banded else ""))
    return _save(figure, path)


def plot_weight_distributions(records: list[dict[str, Any]], variant: str, path: Path) -> Figure:
    """Per tutor, the share of weights in each of ``WEIGHT_BINS`` bins over [0, 1] for every tutored epoch, on one
    colour scale for every panel (square-root, so that a share spread thinly over many bins still shows) with its
    colour bar. Returns the figure, saved to ``path``."""
    by_tutor = _by_variant(records)[variant]
    figure, axes = _panel_grid(len(by_tutor), columns=4, width=3.3, height=2.6)
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    image = None
    for axis, (tutor, runs) in zip(axes, by_tutor.items(), strict=True):
        tutored = [[record.weight_histogram for record in run.epochs if record.phase == "tutored"] for run in runs]
        length = min(len(epochs) for epochs in tutored)
        counts = np.sum([np.asarray(epochs[:length], dtype=float) for epochs in tutored], axis=0)
        shares = counts / counts.sum(axis=1, keepdims=True)
        extent = (0.5, length + 0.5, 0.0, 1.0)
        image = axis.imshow(shares.T, origin="lower", aspect="auto", extent=extent, cmap="viridis", norm=norm)
        axis.set(title=tutor, xlabel="tutored epoch", ylabel="weight")
        for spine in axis.spines.values():
            spine.set(color=tutor_colour(tutor), linewidth=2.5)
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.9, label="share of samples (square-root scale)")
    figure.suptitle(
        f"Weights given per tutored epoch, {variant_title(variant)}{_pooling(records, variant)}: "
        f"{WEIGHT_BINS} bins over [0, 1], seeds pooled"
    )
    return _save(figure, path)


def _pooled(runs: list[StudentRun], attribute: str, groups: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """The mean per group of a tally over ``runs``, groups matched by name (datasets may order them differently), in
    the order of ``groups`` (default: as the runs list them); NaN for a group no run saw."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        tally = getattr(run, attribute)
        for group, total, count in zip(tally.groups, tally.sums, tally.counts, strict=True):
            sums[group] += total
            counts[group] += count
    groups = list(sums) if groups is None else groups
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.array([sums[group] / counts[group] if counts[group] else np.nan for group in groups])
    return groups, means


def _shared_groups(runs_by_tutor: list[list[StudentRun]], attribute: str) -> list[str]:
    """Every group of a tally that any of the runs lists, in first-seen order: one axis for all tutors."""
    return list(dict.fromkeys(group for runs in runs_by_tutor for run in runs for group in getattr(run, attribute).groups))


def plot_weighting(records: list[dict[str, Any]], variant: str, tutors: list[str], path: Path) -> Figure:
    """Mean weight per tutor as a function of EMA loss, of correctness, of label noise and of manipulation family, and
    how well each tutor's weights flag flipped labels per tutored epoch (noise-detection AUROC), on two rows of panels
    with one legend beside them.

    ``uniform`` (weight 1 for every sample) is drawn as a grey reference line wherever the variant has it, whether or
    not ``tutors`` names it; a variant without it says so in the title. Returns the figure, saved to ``path``.
    """
    by_tutor = _by_variant(records)[variant]
    tutors = [tutor for tutor in tutors if tutor in by_tutor and tutor != "uniform"]
    has_uniform = "uniform" in by_tutor
    figure = Figure(figsize=(17, 9.5), layout="constrained")
    grid = figure.add_gridspec(2, 12)
    ema, detection = figure.add_subplot(grid[0, :7]), figure.add_subplot(grid[0, 7:])
    correct, noise, family = figure.add_subplot(grid[1, :3]), figure.add_subplot(grid[1, 3:6]), figure.add_subplot(grid[1, 6:])
    groups = _shared_groups([by_tutor[tutor] for tutor in tutors], "weight_by_ema_loss")
    for tutor in tutors:
        ema.plot(range(len(groups)), _pooled(by_tutor[tutor], "weight_by_ema_loss", groups)[1], marker="o", **_style(tutor))
    ema.set_xticks(range(len(groups)), groups, rotation=30, fontsize=8)
    ema.set(title="mean weight vs EMA loss", xlabel="EMA loss bin", ylabel="mean weight", ylim=(0, 1.1))
    for axis, attribute, title in (
        (correct, "weight_by_correct", "vs correctness at the forward"),
        (noise, "weight_by_label_noise", "clean vs flipped labels"),
        (family, "weight_by_family", "per manipulation family"),
    ):
        width = 0.8 / max(1, len(tutors))
        groups = _shared_groups([by_tutor[tutor] for tutor in tutors], attribute)
        pooled = {tutor: _pooled(by_tutor[tutor], attribute, groups) for tutor in tutors}
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
        axis.set_xticks(range(len(shown)), [groups[i] for i in shown], fontsize=9)
        axis.set(title=title, ylabel="mean weight", ylim=(0, 1.1))
    for axis in (ema, correct, noise, family):
        if has_uniform:
            axis.axhline(1.0, color=TUTOR_COLOURS["uniform"], linestyle="--", linewidth=1.2, label="uniform (weight 1)")
        axis.grid(axis="y", alpha=0.3)
    _plot_noise_detection(detection, {tutor: by_tutor[tutor] for tutor in tutors}, has_uniform)
    _shared_legend(figure, [ema, detection, correct, noise, family])
    missing = "" if has_uniform else "; uniform not in this grid"
    figure.suptitle(
        f"What the tutors weighted, {variant_title(variant)}{_pooling(records, variant)} (seeds pooled, tutored epochs{missing})"
    )
    return _save(figure, path)


def _plot_noise_detection(axis: Axes, runs_by_tutor: dict[str, list[StudentRun]], has_uniform: bool = False) -> None:
    """Per tutored epoch, the mean over seeds of the AUROC with which low weights flag flipped labels; constant
    weights (``uniform``'s) score 0.5, the dotted line."""
    axis.set(title="flipped labels flagged by low weight", xlabel="tutored epoch", ylabel="noise-detection AUROC", ylim=(0, 1.05))
    chance = "uniform (constant weights) = chance, 0.5" if has_uniform else "chance, 0.5"
    axis.axhline(0.5, color=TUTOR_COLOURS["uniform"], linewidth=1.2, linestyle=":", label=chance)
    plotted = False
    for tutor, runs in runs_by_tutor.items():
        curves = [[e.noise_auroc for e in run.epochs if e.phase == "tutored"] for run in runs]
        length = min(len(curve) for curve in curves)
        curves_array = np.array([curve[:length] for curve in curves], dtype=float)
        if curves_array.size and not np.isnan(curves_array).all():
            with np.errstate(invalid="ignore"):
                mean = np.nanmean(curves_array, axis=0)
            axis.plot(range(1, length + 1), mean, marker="o", **_style(tutor))
            plotted = True
    if not plotted:
        axis.text(0.5, 0.5, "no flipped label", ha="center", va="center", transform=axis.transAxes)
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3)


def plot_paired_differences(summary: Sequence[dict[str, Any]], path: Path, title: str = "") -> Figure:
    """The headline: each tutor's paired difference to ``uniform`` in AUC on every test split, mean and 95% interval
    over seeds, one row of panels per variant and one column per split; the pooled rows where a variant has several
    evaluation datasets.

    ``summary`` is :func:`experiments.summary.paired_summary`'s rows or a ``results.csv`` read back (numbers as text
    are read). A filled marker is a difference that ``results.md`` calls better or worse, an open one a difference
    without verdict; tutors are ordered by their difference on the first split, ``n`` is their number of pairs. An
    interval past the panel's robust limits is cut there, its values written at the edge. Returns the figure, saved
    to ``path``.
    """
    splits = _auc_splits(summary)
    if not splits:
        raise ValueError("no paired AUC difference (diff_test_*_auc) in these rows; give a benchmark's results.csv")
    variants: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in summary:
        variants[row["variant"]].append(row)
    figure = Figure(layout="constrained")
    rows_shown = {variant: _headline_rows(rows) for variant, rows in variants.items()}
    heights = [max(1.6, 0.32 * len(rows) + 1.0) for rows in rows_shown.values()]
    figure.set_size_inches(5.2 * len(splits) + 2.6, sum(heights) + 0.8)
    axes = figure.subplots(len(variants), len(splits), squeeze=False, gridspec_kw={"height_ratios": heights})
    for panels, (variant, rows) in zip(axes, rows_shown.items(), strict=True):
        first = f"diff_{splits[0]}_auc"
        ordered = sorted(rows, key=lambda row: np.nan_to_num(_number(row[first]), nan=-np.inf))  # best on top
        pooling = ", datasets pooled" if any(row.get("dataset") == POOLED for row in rows) else ""
        for index, (axis, split) in enumerate(zip(panels, splits, strict=True)):
            _forest(axis, ordered, f"diff_{split}_auc")
            axis.set_title(f"{variant_title(variant)}{pooling}: {split_label(split)} AUC")
            axis.set_xlabel(f"Δ {split_label(split)} AUC vs uniform, same seed (95% interval)")
            if index:
                axis.tick_params(labelleft=False)
    handles = [
        Line2D([], [], color="#444444", marker="o", linestyle="-", label="verdict: better or worse (results.md)"),
        Line2D([], [], color="#444444", marker="o", markerfacecolor="white", linestyle="-", label="no verdict"),
        Line2D([], [], color=TUTOR_COLOURS[REFERENCE], linestyle="--", label="uniform (the reference, 0)"),
    ]
    figure.legend(handles=handles, loc="outside right center", fontsize=9, frameon=False)
    figure.suptitle(title or "Paired difference to uniform in AUC: mean and 95% interval over seeds")
    return _save(figure, path)


def _auc_splits(summary: Sequence[dict[str, Any]]) -> list[str]:
    """The test splits whose frame AUC difference the rows hold, in column order."""
    columns = summary[0].keys() if summary else []
    matches = (re.fullmatch(r"diff_(test_.+)_auc", column) for column in columns)
    return [match.group(1) for match in matches if match and not match.group(1).endswith("_video")]


def _headline_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One variant's rows the headline shows: every tutor but the reference, on the pooled rows where there are any."""
    pooled = any(row.get("dataset") == POOLED for row in rows)
    return [row for row in rows if row["tutor"] != REFERENCE and (not pooled or row.get("dataset") == POOLED)]


def _number(value: Any) -> float:
    """A number of a summary row, whether computed or read back from CSV text (empty: NaN)."""
    return float(value) if value not in ("", None) else float("nan")


def _forest(axis: Axes, rows: list[dict[str, Any]], column: str) -> None:
    """One forest panel: per row (bottom to top) the mean of ``column`` and its interval, in the tutor's colour."""
    values = [(_number(row[column]), _number(row[f"{column}_low"]), _number(row[f"{column}_high"])) for row in rows]
    # Tukey's fences: a panel has a dozen tutors, of which one alone is already a tenth of the values.
    low_limit, high_limit = robust_limits([value for triple in values for value in triple] + [0.0], 0.25, reach=1.5)
    # The reference line at 0 stays in view even when every tutor differs from uniform.
    low_limit, high_limit = min(low_limit, 0.0), max(high_limit, 0.0)
    axis.set_xlim(low_limit, high_limit)
    axis.axvline(0.0, color=TUTOR_COLOURS[REFERENCE], linestyle="--", linewidth=1.2)
    for position, (row, (mean, low, high)) in enumerate(zip(rows, values, strict=True)):
        if math.isnan(mean):
            continue
        colour = tutor_colour(row["tutor"])
        judged = row.get(f"{column}_verdict") in JUDGED
        if not math.isnan(low):
            axis.plot([low, high], [position, position], color=colour, linewidth=2.2, solid_capstyle="butt")
        shown = min(max(mean, low_limit), high_limit)
        marker = "o" if shown == mean else ("<" if mean < low_limit else ">")
        face = colour if judged else "white"
        axis.plot(shown, position, marker=marker, markersize=7, color=colour, markerfacecolor=face, mew=1.6, clip_on=False)
        ends = [value for value in (low, mean, high) if not math.isnan(value)]
        if min(ends) < low_limit or max(ends) > high_limit:
            text = f"{mean:+.3f}" if math.isnan(low) else f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
            left = min(ends) < low_limit
            axis.annotate(
                ("◂ " if left else "") + text + ("" if left else " ▸"),
                (0.01 if left else 0.99, position),
                xycoords=axis.get_yaxis_transform(),
                ha="left" if left else "right",
                va="bottom",
                fontsize=7.5,
                color=colour,
                xytext=(0, 3),
                textcoords="offset points",
            )
    labels = [f"{row['tutor']}  n={_number(row[f'{column}_pairs']):.0f}" for row in rows]
    axis.set_yticks(range(len(rows)), labels, fontsize=9)
    axis.set_ylim(-0.7, len(rows) - 0.3)
    axis.locator_params(axis="x", nbins=6)
    axis.grid(axis="x", alpha=0.3)


def plot_teaching_curve(curve: list[Any], path: Path) -> Figure:
    """The teaching curve (``experiments.teach.TaughtStudent`` records, in order): the tutor's noise AUROC on each new
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
        _legend(axis)
    return _save(figure, path)


def plot_weights_against_columns(
    states: np.ndarray, weights: np.ndarray, flipped: np.ndarray, layout: Any, path: Path, title: str = ""
) -> Figure:
    """The tutor's weight against each single state column, flipped and clean labels apart (at most 3,000 rows each).

    Flipped rows are drawn first and both half-transparent, so neither group hides the other. Returns the figure,
    saved to ``path``."""
    names = [name for name, where in layout.columns.items() if where.stop - where.start == 1 and name not in ("counters",)]
    names += list(layout.parts)
    figure, axes = _panel_grid(len(names), columns=4, width=3.3, height=2.9)
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
    _shared_legend(figure, axes)
    for handle in figure.legends[0].legend_handles:
        handle.set(alpha=1.0, sizes=[30])
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Figure:
    """Save ``figure`` atomically: a run killed while it draws never leaves a truncated image."""
    image = io.BytesIO()
    figure.savefig(image, format=path.suffix.lstrip(".") or "png", dpi=110)
    write_atomically(path, image.getvalue())
    return figure


def main(argv: list[str] | None = None) -> None:
    """``python -m experiments.plots RESULTS_CSV OUT_PNG [--title TITLE]``: the paired-difference plot of a grid."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.plots",
        description="Draw each tutor's paired difference to uniform in AUC (mean, 95%% interval) from a grid's results.csv.",
    )
    parser.add_argument("results", type=Path, help="a finished grid's results.csv")
    parser.add_argument("out", type=Path, help="the PNG file to write")
    parser.add_argument("--title", default="", help="the figure's title (default: what it shows)")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        parser.error(f"{args.results} is not a file; give a grid's results.csv (tsrl benchmark writes it)")
    with args.results.open(newline="") as file:
        rows = list(csv.DictReader(file))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_paired_differences(rows, args.out, args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
