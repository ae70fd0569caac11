"""Plain-text tables of Student runs, for the terminal and the README."""

from __future__ import annotations

import math

from experiments.record import StudentRun

FINAL_ROWS = (
    ("seen AUC", "test_seen", "auc"),
    ("seen video AUC", "test_seen", "video_auc"),
    ("unseen AUC", "test_unseen", "auc"),
    ("unseen video AUC", "test_unseen", "video_auc"),
    ("seen ACC", "test_seen", "acc"),
    ("unseen ACC", "test_unseen", "acc"),
    ("seen EER", "test_seen", "eer"),
    ("unseen EER", "test_unseen", "eer"),
)


def _number(value: float, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def epoch_table(baseline: StudentRun, tutored: StudentRun) -> str:
    """Per epoch: both Students' validation AUC, the tutor's mean weight and mean reward."""
    header = [
        "epoch",
        "phase",
        f"{baseline.label} val AUC",
        f"{tutored.label} val AUC",
        f"{tutored.label} mean weight",
        f"{tutored.label} mean reward",
    ]
    rows = [
        [str(a.epoch), b.phase, _number(a.val_auc), _number(b.val_auc), _number(b.mean_weight), _number(b.mean_reward)]
        for a, b in zip(baseline.epochs, tutored.epochs, strict=False)
    ]
    return format_table(header, rows)


def final_table(runs: list[StudentRun]) -> str:
    """Test metrics of every run side by side, frame and video level, plus wall time."""
    header = ["metric", *(run.label for run in runs)]
    rows = [[name, *(_number(run.test.get(split, {}).get(key, float("nan"))) for run in runs)] for name, split, key in FINAL_ROWS]
    families = sorted({family for run in runs for split in run.test.values() for family in split.get("family_auc", {})})
    for split in ("test_seen", "test_unseen"):
        for family in families:
            values = [run.test.get(split, {}).get("family_auc", {}).get(family) for run in runs]
            if any(value is not None for value in values):
                rows.append(
                    [
                        f"{split.removeprefix('test_')} AUC {family}",
                        *(_number(v if v is not None else float("nan")) for v in values),
                    ]
                )
    rows.append(["wall time (s)", *(f"{run.wall_time_s:.0f}" for run in runs)])
    return format_table(header, rows)
