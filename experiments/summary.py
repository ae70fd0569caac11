"""Benchmark summaries, paired by seed.

Every Student of one seed shares its data, initialisation, warm-up and batch order, so the measurement that tells
tutors apart is the **paired difference** to ``uniform`` at the same seed: its mean over seeds with a 95% Student-t
interval. A tutor is called better or worse than uniform only where that interval excludes 0. The means of
independent Students (unpaired, with their own intervals) stay as a secondary table.

Files: ``runs.csv`` (one row per Student, with its differences to the uniform Student of its seed),
``results.csv`` (one row per variant and tutor: every paired statistic and the per-seed differences) and the
Markdown of ``results.md``.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from agents import TUTORS
from experiments.config import split_tutor_entry
from experiments.report import split_label, tested_splits

METRICS = ("auc", "video_auc", "acc", "eer", "ap")
SPLITS = ("test_seen", "test_unseen")
"""The embedded benchmark's test splits; a benchmark on other data has its own (see :func:`benchmark_splits`)."""
REFERENCE = "uniform"
ORACLE = "oracle"
# The metrics compared between tutors, each on every test split: (metric, header, True if higher is better).
HEADLINE_METRICS = (("auc", "AUC", True), ("video_auc", "video AUC", True), ("eer", "EER", False))
# Columns of the secondary, unpaired table after each split's AUC: (header, CSV column).
UNPAIRED_EXTRA_COLUMNS = (
    ("mean weight flipped", "weight_flipped"),
    ("mean weight clean", "weight_clean"),
    ("mean reward flipped", "reward_flipped"),
    ("mean reward clean", "reward_clean"),
    ("overhead vs uniform", "overhead_vs_uniform"),
)


def headline(splits: Sequence[str] = SPLITS) -> tuple[tuple[str, str, bool], ...]:
    """The metrics compared between tutors on ``splits``: (header, CSV column, True if higher is better)."""
    return tuple(
        (f"{split_label(split)} {name}", f"{split}_{metric}", higher)
        for metric, name, higher in HEADLINE_METRICS
        for split in splits
    )


def share_of_oracle_columns(splits: Sequence[str] = SPLITS) -> tuple[str, ...]:
    """The oracle's gain is measured on these; a tutor's share of it is its own paired difference over the oracle's."""
    return tuple(f"{split}_auc" for split in splits)


def unpaired_columns(splits: Sequence[str] = SPLITS) -> tuple[tuple[str, str], ...]:
    """Columns of the secondary, unpaired table: (header, CSV column)."""
    return (*((f"{split_label(split)} AUC", f"{split}_auc") for split in splits), *UNPAIRED_EXTRA_COLUMNS)


def benchmark_splits(records: list[dict[str, Any]]) -> tuple[str, ...]:
    """The test splits of a benchmark's records, in the order their data source evaluates them."""
    return tuple(tested_splits([record["run"] for record in records]))


HEADLINE = headline()  # the embedded benchmark's


def learns(entry: str) -> bool:
    """Whether a benchmark's tutor entry (``ppo``, ``ppo@val_alignment``, ...) is a learned tutor."""
    tutor, _ = split_tutor_entry(entry)
    return tutor in TUTORS and TUTORS[tutor].learns


def result_rows(records: list[dict[str, Any]], splits: Sequence[str] = SPLITS) -> list[dict[str, Any]]:
    """One flat row per run: identifiers, test metrics on ``splits``, noise detection, weights on flipped vs clean
    samples, wall time, and each headline metric's difference to the uniform Student of the same variant and seed."""
    rows = []
    for record in records:
        run = record["run"]
        row: dict[str, Any] = {"variant": record["variant"], "tutor": record["tutor"], "seed": record["seed"]}
        for split in splits:
            for metric in METRICS:
                row[f"{split}_{metric}"] = run.test.get(split, {}).get(metric, float("nan"))
        row["noise_auroc"] = run.noise_auroc
        noise = run.weight_by_label_noise.means()
        row["weight_clean"], row["weight_flipped"] = noise["clean"], noise["flipped"]
        row["weight_flipped_over_clean"] = row["weight_flipped"] / row["weight_clean"] if row["weight_clean"] else float("nan")
        # Records written before rewards were tallied have none.
        rewards = run.reward_by_label_noise.means() if run.reward_by_label_noise else {}
        row["reward_clean"], row["reward_flipped"] = rewards.get("clean", float("nan")), rewards.get("flipped", float("nan"))
        row["wall_time_s"] = run.wall_time_s
        rows.append(row)
    uniform = {(row["variant"], row["seed"]): row for row in rows if row["tutor"] == REFERENCE}
    nothing = defaultdict(lambda: float("nan"))
    for row in rows:
        baseline = uniform.get((row["variant"], row["seed"]), nothing)
        row |= {f"diff_{column}": row[column] - baseline[column] for _, column, _ in headline(splits)}
        row["overhead_vs_uniform"] = row["wall_time_s"] / baseline["wall_time_s"] - 1.0 if baseline["wall_time_s"] else math.nan
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """``rows`` as CSV; a column some rows lack (a state column only one tutor observed) is left empty in them."""
    fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
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


@dataclass(frozen=True)
class PairedDifference:
    """A tutor's difference to uniform on one metric, seed by seed, with the mean's 95% interval."""

    per_seed: dict[int, float]
    mean: float
    half_width: float  # NaN below two pairs
    sd: float  # of the per-seed differences; NaN below two pairs

    @classmethod
    def of(cls, per_seed: dict[int, float]) -> PairedDifference:
        kept = {seed: value for seed, value in sorted(per_seed.items()) if not math.isnan(value)}
        mean, half = mean_interval(list(kept.values()))
        sd = float(np.std(list(kept.values()), ddof=1)) if len(kept) > 1 else float("nan")
        return cls(kept, mean, half, sd)

    @property
    def pairs(self) -> int:
        return len(self.per_seed)

    @property
    def interval(self) -> tuple[float, float]:
        return self.mean - self.half_width, self.mean + self.half_width

    @property
    def excludes_zero(self) -> bool:
        """True only when the 95% interval lies entirely above or below 0 (never for fewer than two pairs)."""
        low, high = self.interval
        return not math.isnan(self.half_width) and (low > 0 or high < 0)

    def verdict(self, higher_is_better: bool) -> str:
        """``better``, ``worse`` or ``no difference shown`` (``one seed`` where no interval exists)."""
        if self.pairs < 2:
            return "one seed" if self.pairs else "no pair"
        if not self.excludes_zero:
            return "no difference shown"
        return "better" if (self.mean > 0) == higher_is_better else "worse"


def paired_summary(rows: list[dict[str, Any]], splits: Sequence[str] = SPLITS) -> list[dict[str, Any]]:
    """One row per variant and tutor: for every headline metric on ``splits`` the paired difference to uniform (mean,
    interval, pairs, verdict, per-seed values), the share of the oracle's gain, the noise-detection AUROC and the
    unpaired mean ± interval of each metric."""
    compared = headline(splits)
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_cell[row["variant"], row["tutor"]].append(row)
    differences = {
        cell: {column: PairedDifference.of({r["seed"]: r[f"diff_{column}"] for r in runs}) for _, column, _ in compared}
        for cell, runs in by_cell.items()
    }
    summary = []
    for (variant, tutor), runs in by_cell.items():
        out: dict[str, Any] = {"variant": variant, "tutor": tutor, "kind": _kind(tutor), "seeds": len(runs)}
        for _, column, higher in compared:
            difference = differences[variant, tutor][column]
            low, high = difference.interval
            out |= {
                f"diff_{column}": difference.mean,
                f"diff_{column}_low": low,
                f"diff_{column}_high": high,
                f"diff_{column}_pairs": difference.pairs,
                f"diff_{column}_sd": difference.sd,
                f"diff_{column}_verdict": difference.verdict(higher),
                f"diff_{column}_per_seed": ";".join(f"{seed}:{value:+.4f}" for seed, value in difference.per_seed.items()),
            }
        for column in share_of_oracle_columns(splits):
            oracle = differences.get((variant, ORACLE), {}).get(column)
            gain = oracle.mean if oracle is not None else float("nan")
            own = differences[variant, tutor][column].mean
            out[f"share_of_oracle_{column}"] = own / gain if gain > 0 else float("nan")
        out["noise_auroc"], out["noise_auroc_half"] = mean_interval([r["noise_auroc"] for r in runs])
        for _, column in unpaired_columns(splits):
            out[column], out[f"{column}_half"] = mean_interval([r[column] for r in runs])
        summary.append(out)
    return summary


def _kind(entry: str) -> str:
    tutor, _ = split_tutor_entry(entry)
    if tutor == ORACLE:
        return "reference"
    return TUTORS[tutor].kind if tutor in TUTORS else "heuristic"


def _signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.3f}"


def _difference_cell(row: dict[str, Any], column: str) -> str:
    mean, low, high = row[f"diff_{column}"], row[f"diff_{column}_low"], row[f"diff_{column}_high"]
    if math.isnan(mean):
        return "-"
    if math.isnan(low):
        return _signed(mean)
    text = f"{_signed(mean)} [{_signed(low)}, {_signed(high)}]"
    return f"**{text}**" if row[f"diff_{column}_verdict"] in ("better", "worse") else text


def _plain_cell(mean: float, half: float, percent: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    if percent:
        return f"{mean:+.0%}" if math.isnan(half) else f"{mean:+.0%} ± {half:.0%}"
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def _verdict(row: dict[str, Any], compared: tuple[tuple[str, str, bool], ...]) -> str:
    better = [name for name, column, _ in compared if row[f"diff_{column}_verdict"] == "better"]
    worse = [name for name, column, _ in compared if row[f"diff_{column}_verdict"] == "worse"]
    parts = [f"better on {', '.join(better)}"] if better else []
    parts += [f"worse on {', '.join(worse)}"] if worse else []
    return "; ".join(parts) or "no difference shown"


def markdown_tables(summary: list[dict[str, Any]], splits: Sequence[str] = SPLITS) -> str:
    """Per variant: the paired table (tutors sorted by their difference on the AUC of the last of ``splits``, the
    unseen or cross-dataset one, differences whose interval excludes 0 in bold), then the unpaired means. With one
    seed the paired table gives the differences alone and says that one seed cannot separate tutors."""
    compared = headline(splits)
    shares = share_of_oracle_columns(splits)
    ranked = f"diff_{splits[-1]}_auc"
    by_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in summary:
        by_variant[row["variant"]].append(row)
    parts = []
    for variant, rows in by_variant.items():
        rows = sorted(rows, key=lambda r: (r["tutor"] != REFERENCE, -np.nan_to_num(r[ranked], nan=-9.0)))
        pairs = max(r[f"{ranked}_pairs"] for r in rows)
        has_oracle = any(not math.isnan(r[f"share_of_oracle_{shares[0]}"]) for r in rows)
        has_noise = any(not math.isnan(r["noise_auroc"]) for r in rows)
        header = ["tutor", "kind", "pairs", *(f"Δ {name}" for name, _, _ in compared)]
        oracle_splits = " / ".join(split_label(split) for split in splits)
        header += [f"share of oracle gain ({oracle_splits} AUC)"] if has_oracle else []
        header += ["noise AUROC"] if has_noise else []
        header += ["verdict vs uniform"] if pairs > 1 else []
        lines = [f"### {variant}", ""]
        if pairs < 2:
            lines += ["One seed: the differences below are single pairs, and one seed cannot separate tutors.", ""]
        else:
            lines += [
                f"Paired difference to `uniform` at the same seed: mean [95% interval] over up to {pairs} seeds; "
                "bold where the interval excludes 0.",
                "",
            ]
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for row in rows:
            cells = [row["tutor"], row["kind"], str(row[f"{ranked}_pairs"])]
            if row["tutor"] == REFERENCE:
                cells += ["0"] * len(compared)
            else:
                cells += [_difference_cell(row, column) for _, column, _ in compared]
            if has_oracle:
                gains = [row[f"share_of_oracle_{column}"] for column in shares]
                shown = row["tutor"] not in (REFERENCE, ORACLE)
                cells.append(" / ".join(f"{s:+.0%}" if shown and not math.isnan(s) else "-" for s in gains))
            if has_noise:
                cells.append(_plain_cell(row["noise_auroc"], row["noise_auroc_half"]))
            if pairs > 1:
                cells.append(_verdict(row, compared) if row["tutor"] != REFERENCE else "reference")
            lines.append("| " + " | ".join(cells) + " |")
        columns = [c for c in unpaired_columns(splits) if any(not math.isnan(r[c[1]]) for r in rows)]
        unpaired = "mean ± 95% interval over independent Students" if pairs > 1 else "each Student's value"
        lines += ["", f"Unpaired: {unpaired} (secondary: it hides the effects that pairing shows).", ""]
        lines += ["| tutor | seeds | " + " | ".join(name for name, _ in columns) + " |", "|" + " --- |" * (len(columns) + 2)]
        for row in rows:
            cells = [
                _plain_cell(row[column], row[f"{column}_half"] if pairs > 1 else float("nan"), column == "overhead_vs_uniform")
                for _, column in columns
            ]
            lines.append(f"| {row['tutor']} | {row['seeds']} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def state_column_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run and tutored epoch: the AUROC with which each state column alone flags flipped labels."""
    rows = []
    for record in records:
        tutored = [epoch for epoch in record["run"].epochs if epoch.phase == "tutored"]
        for index, epoch in enumerate(tutored, start=1):
            if epoch.state_column_auroc and not all(math.isnan(v) for v in epoch.state_column_auroc.values()):
                row = {"variant": record["variant"], "tutor": record["tutor"], "seed": record["seed"], "tutored_epoch": index}
                rows.append(row | {"tutor_weights": epoch.noise_auroc} | epoch.state_column_auroc)
    return rows


def state_column_table(rows: list[dict[str, Any]], tutor: str = REFERENCE) -> str:
    """Markdown: per variant and tutored epoch, each column's AUROC (mean ± 95% interval over seeds) under ``tutor``."""
    chosen = [row for row in rows if row["tutor"] == tutor]
    if not chosen:
        return ""
    columns = [key for key in chosen[0] if key not in ("variant", "tutor", "seed", "tutored_epoch", "tutor_weights")]
    lines = [
        f"How well each state column alone flags a flipped label under `{tutor}` training (AUROC, 0.5 = not at all, "
        "1 = perfectly; mean ± 95% interval over seeds).",
        "",
        "| variant | tutored epoch | seeds | " + " | ".join(columns) + " |",
        "|" + " --- |" * (len(columns) + 3),
    ]
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in chosen:
        grouped[row["variant"], row["tutored_epoch"]].append(row)
    for (variant, epoch), group in sorted(grouped.items()):
        cells = [_plain_cell(*mean_interval([r[c] for r in group])) for c in columns]
        lines.append(f"| {variant} | {epoch} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seeds_needed(sd: float, effect: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """Pairs a two-sided paired t-test needs to detect a mean difference ``effect`` with ``power``, for differences
    of standard deviation ``sd`` (the noncentral t distribution, no normal approximation)."""
    if not sd > 0:
        raise ValueError(f"the paired standard deviation must be positive, got {sd}")
    for n in range(2, 10_000):
        critical = stats.t.ppf(1 - alpha / 2, n - 1)
        shift = effect / sd * math.sqrt(n)
        if stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift) >= power:
            return n
    raise ValueError(f"an effect of {effect} with paired sd {sd} needs 10,000 pairs or more")


def power_table(summary: list[dict[str, Any]], effects: tuple[float, ...] = (0.01, 0.02), splits: Sequence[str] = SPLITS) -> str:
    """Markdown: per variant and test split's AUC, the median paired sd of the non-reference tutors and the pairs needed for each
    effect at 80% power. The oracle (a near-constant gain) and uniform are left out."""
    lines = [
        "| variant | metric | tutors | median paired sd | "
        + " | ".join(f"seeds for {effect:g} at 80% power" for effect in effects)
        + " |",
        "|" + " --- |" * (4 + len(effects)),
    ]
    by_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in summary:
        if row["tutor"] not in (REFERENCE, ORACLE):
            by_variant[row["variant"]].append(row)
    for variant, rows in by_variant.items():
        for name, column in ((f"{split_label(split)} AUC", f"{split}_auc") for split in splits):
            sds = [r[f"diff_{column}_sd"] for r in rows if not math.isnan(r[f"diff_{column}_sd"])]
            if not sds:
                continue
            sd = float(np.median(sds))
            needed = " | ".join(str(seeds_needed(sd, effect)) for effect in effects)
            lines.append(f"| {variant} | {name} | {len(sds)} | {sd:.3f} | {needed} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def paired_between(out: Path, tutor: str, against: str) -> str:
    """Markdown: ``tutor`` − ``against`` on each headline metric of a finished grid in ``out`` (its ``runs.csv``),
    paired by variant and seed like every difference to uniform (both were trained on the same Students)."""
    with (out / "runs.csv").open() as handle:
        runs = list(csv.DictReader(handle))
    metrics = [name.removeprefix("diff_") for name in runs[0] if name.startswith("diff_")]
    values = {(row["variant"], row["tutor"], int(row["seed"])): row for row in runs}
    lines = [f"| variant | metric | pairs | {tutor} − {against} [95% interval] | per seed |", "| --- | --- | --- | --- | --- |"]
    for variant in dict.fromkeys(row["variant"] for row in runs):
        seeds = [seed for v, t, seed in values if v == variant and t == tutor and (variant, against, seed) in values]
        for metric in metrics:
            difference = PairedDifference.of(
                {s: float(values[variant, tutor, s][metric]) - float(values[variant, against, s][metric]) for s in seeds}
            )
            low, high = difference.interval
            per_seed = ", ".join(f"{value:+.3f}" for value in difference.per_seed.values())
            cell = f"{difference.mean:+.3f} [{low:+.3f}, {high:+.3f}]"
            lines.append(f"| {variant} | {metric} | {difference.pairs} | {cell} | {per_seed} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.summary", description="one tutor against another, paired by seed, on a finished grid"
    )
    parser.add_argument("out", type=Path, help="the grid's output folder (holding runs.csv)")
    parser.add_argument("tutor")
    parser.add_argument("against")
    arguments = parser.parse_args(argv)
    print(paired_between(arguments.out, arguments.tutor, arguments.against))


if __name__ == "__main__":
    main()
