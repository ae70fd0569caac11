"""The figures: one colour per tutor in every figure, axes that an outlier does not set, a legend for every panel,
a colour bar on the weight heat maps, grids with evaluation datasets, the paired-difference plot and the loop diagram."""

from __future__ import annotations

import csv
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from experiments.analysis.figure_style import robust_limits, tutor_colour, variant_title
from experiments.analysis.plots import main as plots_main
from experiments.analysis.plots import (
    plot_paired_differences,
    plot_validation_curves,
    plot_weight_distributions,
    plot_weighting,
)
from experiments.analysis.summary import paired_summary, result_rows, write_csv
from experiments.records.student_run import WEIGHT_BINS, EpochRecord, GroupTally, StudentRun
from experiments.studies.diagram import draw_loop
from experiments.studies.diagram import main as diagram_main

TUTORS = ("uniform", "oracle", "self_paced", "focal", "noise_mentor", "hard_mining")


def run(tutor: str, seed: int, dip: float = 0.0) -> StudentRun:
    """A Student of one warm-up and four tutored epochs near AUC 0.85 (``dip`` lower from epoch 2 on), with every
    tally the weighting plot reads."""
    rng = np.random.default_rng([seed, zlib.crc32(tutor.encode())])
    epochs = [
        EpochRecord(
            epoch=epoch,
            phase="warm-up" if epoch == 0 else "tutored",
            val_auc=0.85 + 0.01 * rng.standard_normal() - (dip if epoch > 1 else 0.0),
            mean_weight=0.5,
            mean_reward=0.0,
            weight_histogram=list(rng.integers(0, 50, WEIGHT_BINS)),
            noise_auroc=float("nan") if epoch == 0 else 0.5 + 0.1 * rng.random(),
        )
        for epoch in range(5)
    ]

    def tally(groups: list[str]) -> GroupTally:
        return GroupTally(groups, list(rng.random(len(groups)) * 10), [10] * len(groups))

    other = {"video_auc": 0.5, "acc": 0.5, "eer": 0.3, "ap": 0.5}
    seen, unseen = 0.8 + 0.01 * seed + 0.02 * rng.random(2)
    test = {"test_seen": {"auc": seen, **other}, "test_unseen": {"auc": unseen - 0.2, **other}}
    return StudentRun(
        tutor,
        epochs=epochs,
        test=test,
        wall_time_s=1.0,
        weight_by_ema_loss=tally(["0-0.5", "0.5-1", "1-inf"]),
        weight_by_correct=tally(["wrong", "right"]),
        weight_by_label_noise=tally(["clean", "flipped"]),
        weight_by_family=tally(["blend", "real"]),
        noise_auroc=0.6,
    )


def records(variants: tuple[str, ...] = ("noise_0.30",), datasets: tuple[str | None, ...] = (None,)) -> list[dict[str, Any]]:
    """Three seeds of every tutor in ``TUTORS`` per variant and dataset; ``hard_mining`` collapses to AUC 0.25."""
    made = []
    for variant in variants:
        for dataset in datasets:
            for tutor in TUTORS:
                for seed in range(3):
                    cell = {"variant": variant, "tutor": tutor, "seed": seed}
                    cell["run"] = run(tutor, seed, dip=0.6 if tutor == "hard_mining" else 0.0)
                    made.append(cell | ({"dataset": dataset} if dataset else {}))
    return made


def line_colours(figure: Figure) -> dict[str, str]:
    """Every labelled line of a figure's panels: its label -> its colour."""
    return {
        line.get_label(): to_hex(line.get_color())
        for axis in figure.axes
        for line in axis.get_lines()
        if not line.get_label().startswith("_")
    }


def legend_labels(figure: Figure) -> set[str]:
    return {text.get_text() for legend in figure.legends for text in legend.get_texts()}


def test_a_tutor_has_the_same_colour_in_every_figure(tmp_path):
    grid = records(("noise_0.30", "noise_0"))
    curves = line_colours(plot_validation_curves(grid, tmp_path / "val_auc.png"))
    weighting = line_colours(plot_weighting(grid, "noise_0.30", list(TUTORS), tmp_path / "weighting.png"))
    for tutor in ("oracle", "self_paced", "focal", "noise_mentor", "hard_mining"):
        assert curves[tutor] == weighting[tutor] == tutor_colour(tutor), tutor
    assert curves["uniform"] == "#7f7f7f" and curves["oracle"] == "#000000"
    assert len({curves[tutor] for tutor in TUTORS}) == len(TUTORS)


def test_an_outlier_curve_does_not_set_the_y_limits_and_is_named_at_the_edge(tmp_path):
    figure = plot_validation_curves(records(), tmp_path / "val_auc.png")
    (axis,) = [axis for axis in figure.axes if axis.get_visible()]
    low, high = axis.get_ylim()
    # The other tutors' mean curves lie near 0.85 and set the limits; hard_mining's falls to about 0.25.
    others = np.concatenate([line.get_ydata() for line in axis.get_lines() if line.get_label() in TUTORS[:-1]])
    assert others.min() - 0.01 < low < others.min() and others.max() < high < others.max() + 0.01
    assert any(text.get_text().startswith("↓ hard_mining 0.2") for text in axis.texts)
    assert not any("self_paced" in text.get_text() for text in axis.texts)


def test_robust_limits_keep_the_bulk_and_drop_a_far_value():
    bulk = list(np.linspace(0.80, 0.90, 30))
    assert robust_limits(bulk + [0.25]) == pytest.approx((0.794, 0.906))
    assert robust_limits([0.5, 0.6, 0.7, 0.8, 0.9]) == pytest.approx((0.476, 0.924)), "a learning curve is kept whole"
    assert robust_limits([float("nan")]) == (0.0, 1.0)


def test_every_panel_has_a_legend_or_the_shared_one_names_every_tutor(tmp_path):
    grid = records(("noise_0.30", "noise_0.15", "noise_0"))
    for figure in (
        plot_validation_curves(grid, tmp_path / "val_auc.png"),
        plot_weighting(grid, "noise_0.30", list(TUTORS), tmp_path / "weighting.png"),
    ):
        assert len(figure.legends) == 1
        assert legend_labels(figure) >= set(TUTORS) - {"uniform"}
        assert "uniform" in " ".join(legend_labels(figure))
    panels = [axis for axis in plot_validation_curves(grid, tmp_path / "v.png").axes if axis.get_visible()]
    assert [axis.get_title() for axis in panels] == ["label noise 0.30", "label noise 0.15", "label noise 0"]


def test_the_weight_heat_maps_share_one_colour_bar(tmp_path):
    figure = plot_weight_distributions(records(), "noise_0.30", tmp_path / "weights.png")
    bars = [axis for axis in figure.axes if axis.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "share of samples" in bars[0].get_ylabel()
    images = [axis.images[0] for axis in figure.axes if axis.images]
    assert len(images) == len(TUTORS) and len({id(image.norm) for image in images}) == 1


def test_a_grid_with_datasets_plots_pooled_and_says_so(tmp_path):
    grid = records(("noise_0.30",), ("embedded_a", "embedded_b"))
    curves = plot_validation_curves(grid, tmp_path / "val_auc.png")
    assert [axis.get_title() for axis in curves.axes if axis.get_visible()] == ["label noise 0.30, 2 datasets pooled"]
    plot_weight_distributions(grid, "noise_0.30", tmp_path / "weights.png")
    plot_weighting(grid, "noise_0.30", list(TUTORS), tmp_path / "weighting.png")
    summary = paired_summary(result_rows(grid))
    figure = plot_paired_differences(summary, tmp_path / "paired.png")
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert len(labels) == len(TUTORS) - 1 and all(label.endswith("n=6") for label in labels), "the pooled rows only"
    assert figure.axes[0].get_title() == "label noise 0.30, datasets pooled\nseen AUC"
    assert all((tmp_path / name).stat().st_size > 10_000 for name in ("val_auc.png", "weights.png", "weighting.png"))


def test_the_paired_difference_plot_reads_a_results_csv_and_cuts_an_outlier_at_the_edge(tmp_path):
    summary = paired_summary(result_rows(records(("noise_0.30", "noise_0"))))
    # hard_mining: 0.3 below the others; its interval is cut at the panel's edge, its values written there.
    for row in summary:
        if row["tutor"] == "hard_mining":
            for key in ("diff_test_seen_auc", "diff_test_seen_auc_low", "diff_test_seen_auc_high"):
                row[key] -= 0.3
    write_csv(summary, tmp_path / "results.csv")
    plots_main([str(tmp_path / "results.csv"), str(tmp_path / "images" / "paired.png"), "--title", "legacy"])
    assert (tmp_path / "images" / "paired.png").stat().st_size > 10_000
    with (tmp_path / "results.csv").open() as file:
        figure = plot_paired_differences(list(csv.DictReader(file)), tmp_path / "again.png")
    seen = figure.axes[0]
    assert seen.get_xlim()[0] > -0.1, "hard_mining at -0.3 does not set the limits"
    hard = next(row for row in summary if row["tutor"] == "hard_mining" and row["variant"] == "noise_0.30")
    assert [text.get_text() for text in seen.texts] == [
        f"◂ {hard['diff_test_seen_auc']:+.3f} [{hard['diff_test_seen_auc_low']:+.3f}, {hard['diff_test_seen_auc_high']:+.3f}]"
    ]
    assert len(figure.axes) == 4 and [axis.get_title().split("\n")[0] for axis in figure.axes[::2]] == [
        "label noise 0.30",
        "label noise 0",
    ]
    assert legend_labels(figure) == {"verdict: better or worse (results.md)", "no verdict", "uniform (the reference, 0)"}
    with pytest.raises(ValueError, match="results.csv"):
        plot_paired_differences([{"variant": "v", "tutor": "t"}], tmp_path / "none.png")


def test_variant_titles_read_as_words():
    assert variant_title("noise_0.30") == "label noise 0.30" and variant_title("noise_0") == "label noise 0"
    assert variant_title("clean") == "clean"


def test_the_loop_diagram_names_every_stage_in_order(tmp_path: Path):
    (axis,) = draw_loop().axes
    boxes = [text.get_text() for text in axis.texts if text.get_bbox_patch() is not None and text.get_text()]
    titles = [box.split("\n")[0].replace("~", " ").replace("\\text{-}", "-") for box in boxes]
    stages = ["Student", "state rows", "Tutor", "per-sample weights", "weighted update", "reward"]
    assert titles == [f"$\\bf{{{stage}}}$" for stage in stages]
    arrows = [text for text in axis.texts if getattr(text, "arrow_patch", None) is not None]
    assert len(arrows) == len(stages) + 1, "a ring of hand-overs and the reward back to the tutor"
    diagram_main([str(tmp_path / "loop.png")])
    assert (tmp_path / "loop.png").stat().st_size > 20_000
