"""How every figure draws: one fixed colour per tutor (:func:`tutor_colour`), a reward's line style and hatch, variant
titles, axis limits that keep to the bulk of the data (:func:`robust_limits`) with the values outside written at the
panel's edge, legends, panel grids, and atomic saving."""

from __future__ import annotations

import io
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

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


def line_style(entry: str) -> dict[str, Any]:
    """Line keywords for ``entry``: its tutor's colour, and its reward's line style."""
    reward = entry.split("@", 1)[1] if "@" in entry else None
    return {"color": tutor_colour(entry), "linestyle": REWARD_STYLES.get(reward, ("-", ""))[0], "label": entry}


def hatch(entry: str) -> str:
    reward = entry.split("@", 1)[1] if "@" in entry else None
    return REWARD_STYLES.get(reward, ("-", "//"))[1]


def legend(axis: Axes) -> None:
    """The panel's own legend, for panels that show different things from their neighbours."""
    axis.legend(fontsize=8, loc="best", framealpha=0.85)


def shared_legend(figure: Figure, axes: Sequence[Axes]) -> None:
    """One legend beside the panels naming every line, bar and band they label, each once, in the order drawn."""
    entries: dict[str, Any] = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    figure.legend(list(entries.values()), list(entries), loc="outside right center", fontsize=9, frameon=False)


def panel_grid(count: int, columns: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A figure of ``count`` panels wrapped into rows of at most ``columns``, each panel ``width`` x ``height``
    inches; the unused cells of the last row are hidden."""
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    figure = Figure(figsize=(width * columns + 2.0, height * rows + 0.6), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for unused in axes[count:]:
        unused.set_visible(False)
    return figure, axes[:count]


def mark_outliers(axis: Axes, curves: dict[str, tuple[np.ndarray, np.ndarray]], limits: tuple[float, float]) -> None:
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


def save_figure(figure: Figure, path: Path) -> Figure:
    """Save ``figure`` atomically: a run killed while it draws never leaves a truncated image."""
    image = io.BytesIO()
    figure.savefig(image, format=path.suffix.lstrip(".") or "png", dpi=110)
    write_atomically(path, image.getvalue())
    return figure
