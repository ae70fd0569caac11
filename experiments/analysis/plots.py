"""Benchmark plots: validation curves, weight distributions, what each tutor weighted, and the paired differences.

Every figure draws a tutor in the one colour :func:`~experiments.analysis.figure_style.tutor_colour` gives it and names
every tutor it draws in a legend (one legend beside the panels where they all show the same tutors, so that it is read
once and in full). Axes keep to the bulk of the data: a curve or an interval far outside the rest is cut at the panel's
edge with its name and value written there (:func:`~experiments.analysis.figure_style.robust_limits`), so that one
diverging tutor does not flatten the others into one band.

``python -m experiments.analysis.plots RESULTS_CSV OUT_PNG`` draws the paired-difference plot of a finished grid from its
``results.csv``.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from experiments.analysis.figure_style import (
    TUTOR_COLOURS,
    hatch,
    line_style,
    mark_outliers,
    panel_grid,
    robust_limits,
    save_figure,
    shared_legend,
    tutor_colour,
    variant_title,
)
from experiments.analysis.summary import POOLED, REFERENCE
from experiments.records.student_run import WEIGHT_BINS, StudentRun
from experiments.report import split_label

# Up to this many tutors a panel of curves shades each one's spread over seeds; more bands hide the curves.
BANDED_TUTORS = 4
# Verdicts that results.md sets in bold: the paired-difference plot fills these markers.
JUDGED = ("better", "worse")


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
    figure, axes = panel_grid(len(grouped), columns=3, width=5.0, height=3.8)
    for axis, (variant, by_tutor) in zip(axes, grouped.items(), strict=True):
        means: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        shown: list[np.ndarray] = []  # what the y-limits must hold: the mean curves, and the bands where drawn
        for tutor, runs in by_tutor.items():
            length = min(len(run.epochs) for run in runs)
            curves = np.array([[record.val_auc for record in run.epochs[:length]] for run in runs])
            epochs = np.arange(1, length + 1)
            means[tutor] = (epochs, curves.mean(axis=0))
            shown += [means[tutor][1], curves.min(axis=0), curves.max(axis=0)] if banded else [means[tutor][1]]
            axis.plot(epochs, means[tutor][1], linewidth=1.6, **line_style(tutor))
            if banded:
                axis.fill_between(epochs, curves.min(axis=0), curves.max(axis=0), color=tutor_colour(tutor), alpha=0.12, lw=0)
        warmup = sum(record.phase == "warm-up" for record in next(iter(by_tutor.values()))[0].epochs)
        if warmup:
            axis.axvspan(0.5, warmup + 0.5, color="#dddddd", alpha=0.5, label="warm-up (weight 1)")
        limits = robust_limits(np.concatenate(shown))
        axis.set_ylim(limits)
        mark_outliers(axis, means, limits)
        axis.set(title=variant_title(variant) + _pooling(records, variant), xlabel="epoch", ylabel="validation AUC")
        axis.grid(alpha=0.3)
    shared_legend(figure, axes)
    figure.suptitle("Validation AUC per epoch: mean over seeds" + (", band from min to max" if banded else ""))
    return save_figure(figure, path)


def plot_weight_distributions(records: list[dict[str, Any]], variant: str, path: Path) -> Figure:
    """Per tutor, the share of weights in each of ``WEIGHT_BINS`` bins over [0, 1] for every tutored epoch, on one
    colour scale for every panel (square-root, so that a share spread thinly over many bins still shows) with its
    colour bar. Returns the figure, saved to ``path``."""
    by_tutor = _by_variant(records)[variant]
    figure, axes = panel_grid(len(by_tutor), columns=4, width=3.3, height=2.6)
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
    return save_figure(figure, path)


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
        ema.plot(range(len(groups)), _pooled(by_tutor[tutor], "weight_by_ema_loss", groups)[1], marker="o", **line_style(tutor))
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
                hatch=hatch(tutor),
                edgecolor="white" if not hatch(tutor) else "#333333",
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
    shared_legend(figure, [ema, detection, correct, noise, family])
    missing = "" if has_uniform else "; uniform not in this grid"
    figure.suptitle(
        f"What the tutors weighted, {variant_title(variant)}{_pooling(records, variant)} (seeds pooled, tutored epochs{missing})"
    )
    return save_figure(figure, path)


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
            axis.plot(range(1, length + 1), mean, marker="o", **line_style(tutor))
            plotted = True
    if not plotted:
        axis.text(0.5, 0.5, "no flipped label", ha="center", va="center", transform=axis.transAxes)
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3)


def plot_paired_differences(summary: Sequence[dict[str, Any]], path: Path, title: str = "") -> Figure:
    """The headline: each tutor's paired difference to ``uniform`` in AUC on every test split, mean and 95% interval
    over seeds, one row of panels per variant and one column per split; the pooled rows where a variant has several
    evaluation datasets.

    ``summary`` is :func:`experiments.analysis.summary.paired_summary`'s rows or a ``results.csv`` read back (numbers as text
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
            axis.set_title(f"{variant_title(variant)}{pooling}\n{split_label(split)} AUC")  # two lines: panels sit close
            axis.set_xlabel(f"Δ {split_label(split)} AUC vs uniform\n(same seed, 95% interval)")
            if index:
                axis.tick_params(labelleft=False)
    handles = [
        Line2D([], [], color="#444444", marker="o", linestyle="-", label="verdict: better or worse (results.md)"),
        Line2D([], [], color="#444444", marker="o", markerfacecolor="white", linestyle="-", label="no verdict"),
        Line2D([], [], color=TUTOR_COLOURS[REFERENCE], linestyle="--", label="uniform (the reference, 0)"),
    ]
    figure.legend(handles=handles, loc="outside right center", fontsize=9, frameon=False)
    figure.suptitle(title or "Paired difference to uniform in AUC: mean and 95% interval over seeds")
    return save_figure(figure, path)


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


def main(argv: list[str] | None = None) -> None:
    """``python -m experiments.analysis.plots RESULTS_CSV OUT_PNG [--title TITLE]``: the paired-difference plot of a grid."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.analysis.plots",
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
