"""Tables of Student runs: plain text for the terminal, Markdown for results files."""

from __future__ import annotations

import math

from experiments.records.student_run import StudentRun

# The final table's metric rows: each group is given for every test split before the next group starts.
METRIC_GROUPS = ((("AUC", "auc"), ("video AUC", "video_auc")), (("ACC", "acc"),), (("EER", "eer"),))


def split_label(split: str) -> str:
    """A test split's name in tables: ``test_seen`` as ``seen``, ``test_Celeb-DF-v2`` as ``Celeb-DF-v2``."""
    return split.removeprefix("test_")


def tested_splits(runs: list[StudentRun]) -> list[str]:
    """Every test split of ``runs``, in the order the first run holding it evaluated them."""
    return list(dict.fromkeys(split for run in runs for split in run.test))


def _number(value: float, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """The same table as Markdown (a ``.md`` results file); a ``|`` inside a cell is escaped."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in lines)


def epoch_table(runs: list[StudentRun]) -> str:
    """Per epoch: every Student's validation AUC, and the last one's (the tutored Student's) mean weight and reward."""
    tutored = runs[-1]
    header = [
        "epoch",
        "phase",
        *(f"{run.label} val AUC" for run in runs),
        f"{tutored.label} mean weight",
        f"{tutored.label} mean reward",
    ]
    rows = []
    for epochs in zip(*(run.epochs for run in runs), strict=False):
        last = epochs[-1]
        values = [*(epoch.val_auc for epoch in epochs), last.mean_weight, last.mean_reward]
        rows.append([str(last.epoch), last.phase, *(_number(value) for value in values)])
    return format_table(header, rows)


def final_table(runs: list[StudentRun], time_label: str = "wall time (s)") -> str:
    """Test metrics of every run side by side on each of their test splits, frame and video level, plus each run's
    wall time (its training, or what ``time_label`` names)."""
    header = ["metric", *(run.label for run in runs)]
    splits = tested_splits(runs)
    rows = [
        [f"{split_label(split)} {name}", *(_number(run.test.get(split, {}).get(key, float("nan"))) for run in runs)]
        for group in METRIC_GROUPS
        for split in splits
        for name, key in group
    ]
    families = sorted({family for run in runs for split in run.test.values() for family in split.get("family_auc", {})})
    for split in splits:
        for family in families:
            values = [run.test.get(split, {}).get("family_auc", {}).get(family) for run in runs]
            if any(value is not None for value in values):
                rows.append(
                    [f"{split_label(split)} AUC {family}", *(_number(v if v is not None else float("nan")) for v in values)]
                )
    rows.append([time_label, *(f"{run.wall_time_s:.0f}" for run in runs)])
    return format_table(header, rows)
