"""Benchmark summaries: one CSV row per run, and per variant a Markdown table of means with 95% intervals."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from agents import TUTORS
from experiments.config import split_tutor_entry

METRICS = ("auc", "video_auc", "acc", "eer", "ap")
SPLITS = ("test_seen", "test_unseen")
# Columns of the Markdown table: (header, CSV column, True if higher is better).
TABLE_COLUMNS = (
    ("unseen AUC", "test_unseen_auc", True),
    ("unseen video AUC", "test_unseen_video_auc", True),
    ("seen AUC", "test_seen_auc", True),
    ("seen video AUC", "test_seen_video_auc", True),
    ("unseen EER", "test_unseen_eer", False),
    ("mean weight flipped", "weight_flipped", None),
    ("mean weight clean", "weight_clean", None),
    ("mean reward flipped", "reward_flipped", None),
    ("mean reward clean", "reward_clean", None),
    ("overhead vs uniform", "overhead_vs_uniform", None),
)


def learns(entry: str) -> bool:
    """Whether a benchmark's tutor entry (``ppo``, ``ppo@val_alignment``, ...) is a learned tutor."""
    tutor, _ = split_tutor_entry(entry)
    return tutor in TUTORS and TUTORS[tutor].learns


def result_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per run: identifiers, test metrics, weights on flipped vs clean samples, wall time, overhead."""
    uniform_time = {(r["variant"], r["seed"]): r["run"].wall_time_s for r in records if r["tutor"] == "uniform"}
    rows = []
    for record in records:
        run = record["run"]
        row: dict[str, Any] = {"variant": record["variant"], "tutor": record["tutor"], "seed": record["seed"]}
        for split in SPLITS:
            for metric in METRICS:
                row[f"{split}_{metric}"] = run.test.get(split, {}).get(metric, float("nan"))
        noise = run.weight_by_label_noise.means()
        row["weight_clean"], row["weight_flipped"] = noise["clean"], noise["flipped"]
        row["weight_flipped_over_clean"] = row["weight_flipped"] / row["weight_clean"] if row["weight_clean"] else float("nan")
        # Records written before rewards were tallied have none.
        rewards = run.reward_by_label_noise.means() if run.reward_by_label_noise else {}
        row["reward_clean"], row["reward_flipped"] = rewards.get("clean", float("nan")), rewards.get("flipped", float("nan"))
        row["wall_time_s"] = run.wall_time_s
        baseline = uniform_time.get((record["variant"], record["seed"]))
        row["overhead_vs_uniform"] = run.wall_time_s / baseline - 1.0 if baseline else float("nan")
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% Student-t interval (NaN half-width for a single value)."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(data) == 0:
        return float("nan"), float("nan")
    if len(data) == 1:
        return float(data[0]), float("nan")
    half = stats.t.ppf(0.975, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data))
    return float(data.mean()), float(half)


def _cell(mean: float, half: float, percent: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    if percent:
        return f"{mean:+.0%}" if math.isnan(half) else f"{mean:+.0%} ± {half:.0%}"
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def markdown_tables(rows: list[dict[str, Any]]) -> str:
    """Per variant, tutors sorted by mean unseen AUC, best mean of each scored column in bold, and a verdict line."""
    by_variant: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_variant[row["variant"]][row["tutor"]].append(row)
    parts = []
    for variant, by_tutor in by_variant.items():
        summary = {
            tutor: {column: mean_interval([r[column] for r in runs]) for _, column, _ in TABLE_COLUMNS}
            for tutor, runs in by_tutor.items()
        }
        order = sorted(summary, key=lambda t: -np.nan_to_num(summary[t]["test_unseen_auc"][0], nan=-1.0))
        # A column no run of the table measured (flipped samples without label noise, rewards in older records) is left out.
        columns = [c for c in TABLE_COLUMNS if any(not math.isnan(summary[t][c[1]][0]) for t in order)]
        best = {}
        for _, column, higher in columns:
            means = {t: summary[t][column][0] for t in order if not math.isnan(summary[t][column][0])}
            if higher is not None and means:
                best[column] = (max if higher else min)(means, key=means.get)
        header = ["tutor", "kind", "seeds", *(name for name, _, _ in columns)]
        lines = [f"### {variant}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for tutor in order:
            cells = []
            for _, column, _ in columns:
                text = _cell(*summary[tutor][column], percent=column == "overhead_vs_uniform")
                cells.append(f"**{text}**" if best.get(column) == tutor else text)
            kind = "learned" if learns(tutor) else "heuristic"
            lines.append(f"| {tutor} | {kind} | {len(by_tutor[tutor])} | " + " | ".join(cells) + " |")
        lines += ["", _verdict(summary)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _verdict(summary: dict[str, dict[str, tuple[float, float]]]) -> str:
    """A sentence saying whether the best learned tutor beats ``uniform`` and ``random`` on unseen AUC."""
    learned = [t for t in summary if learns(t)]
    controls = [t for t in ("uniform", "random") if t in summary]
    if not learned or not controls:
        return ""
    best = max(learned, key=lambda t: np.nan_to_num(summary[t]["test_unseen_auc"][0], nan=-1.0))
    mean, half = summary[best]["test_unseen_auc"]
    clauses = []
    for control in controls:
        control_mean, control_half = summary[control]["test_unseen_auc"]
        overlap = math.isnan(half) or math.isnan(control_half) or abs(mean - control_mean) <= half + control_half
        relation = "above" if mean > control_mean else "below"
        strength = "within the seed spread" if overlap else "outside the seed spread"
        clauses.append(f"{abs(mean - control_mean):.3f} {relation} {control} ({strength})")
    return f"Best learned tutor on unseen AUC: **{best}**, " + "; ".join(clauses) + "."
