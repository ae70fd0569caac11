"""A grid's results as Markdown (``results.md``): per variant the paired table (differences to ``uniform`` with their
intervals, bold where the Holm-adjusted test calls them) and the unpaired means, the power table and what each state
column reveals."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments.analysis.statistics import (
    FEW_SEEDS,
    MIN_VERDICT_SEEDS,
    NO_DIFFERENCE,
    NO_PAIR,
    OUTSIDE_FAMILY,
    mean_interval,
    seeds_needed,
)
from experiments.analysis.summary import (
    ORACLE,
    POOLED,
    REFERENCE,
    SPLITS,
    grouped,
    headline,
    is_reference,
    share_of_oracle_columns,
    unpaired_columns,
)
from experiments.report import split_label

POOLED_SENTENCE = (
    "pooled: datasets as strata, seeds within; generalises to new Student seeds on these datasets, not to new datasets."
)


def _signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.3f}"


def interval_text(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return "-"
    return _signed(mean) if math.isnan(low) else f"{_signed(mean)} [{_signed(low)}, {_signed(high)}]"


def p_text(p: float) -> str:
    return "-" if math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _difference_cell(row: dict[str, Any], column: str, intervals: bool) -> str:
    mean, low, high = row[f"diff_{column}"], row[f"diff_{column}_low"], row[f"diff_{column}_high"]
    text = interval_text(mean, low if intervals else float("nan"), high)
    return f"**{text}**" if row[f"diff_{column}_verdict"] in ("better", "worse") else text


def _plain_cell(mean: float, half: float, percent: bool = False) -> str:
    if math.isnan(mean):
        return "-"
    if percent:
        return f"{mean:+.0%}" if math.isnan(half) else f"{mean:+.0%} ± {half:.0%}"
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def _verdict(row: dict[str, Any], compared: tuple[tuple[str, str, bool], ...]) -> str:
    verdicts = [row[f"diff_{column}_verdict"] for _, column, _ in compared]
    better = [name for (name, _, _), verdict in zip(compared, verdicts, strict=True) if verdict == "better"]
    worse = [name for (name, _, _), verdict in zip(compared, verdicts, strict=True) if verdict == "worse"]
    parts = [f"better on {', '.join(better)}"] if better else []
    parts += [f"worse on {', '.join(worse)}"] if worse else []
    why_not = (verdict for verdict in (NO_DIFFERENCE, FEW_SEEDS, OUTSIDE_FAMILY) if verdict in verdicts)
    return "; ".join(parts) or next(why_not, NO_PAIR)


def _family_line(rows: list[dict[str, Any]], compared: tuple[tuple[str, str, bool], ...], pooled: bool) -> str:
    """The declaration of a table's comparison family, read off the differences that have a Holm-adjusted p."""
    members = [
        (row["tutor"], name) for row in rows for name, column, _ in compared if not math.isnan(row[f"diff_{column}_p_holm"])
    ]
    few = any(
        not is_reference(row["tutor"]) and row[f"diff_{column}_verdict"] == FEW_SEEDS for row in rows for _, column, _ in compared
    )
    left_out = "the references uniform, oracle and random" + (" and tutors with fewer than three seeds" if few else "")
    if not members:
        return f"Family: empty ({left_out} are never in it); no verdict."
    names = list(dict.fromkeys(name for _, name in members))
    tutors = list(dict.fromkeys(tutor for tutor, _ in members))
    size = f"{len(names)} × {len(tutors)}" if len(members) == len(names) * len(tutors) else str(len(members))
    where = "pooled rows of the tutors" if pooled else "tutors"
    return (
        f"Family: the {size} differences to `uniform` ({', '.join(names)}) of the {where} in this table; Holm-adjusted p. "
        f"Left out of it: {left_out}."
    )


def _paired_preamble(rows: list[dict[str, Any]], compared: tuple[tuple[str, str, bool], ...], pairs: int) -> list[str]:
    """The lines above a variant's paired table: how it is estimated, and its family (no verdict below three seeds)."""
    if pairs < MIN_VERDICT_SEEDS:
        seeds = (
            "One seed: the differences below are single pairs; one seed cannot separate tutors"
            if pairs < 2
            else f"{pairs} seeds: the differences below are means over {pairs} pairs, without interval"
        )
        return [f"{seeds}, and fewer than three seeds give no verdict.", ""]
    pooled = any(row.get("dataset") == POOLED for row in rows)
    lines = [
        f"Paired difference to `uniform` at the same seed: mean [95% interval, unadjusted] over up to {pairs} seeds"
        + (" per dataset" if pooled else "")
        + "; the t-test, Holm-adjusted and Wilcoxon p are in results.csv. Bold where the Holm-adjusted t-test p < 0.05, "
        "and only there is a tutor called better or worse; fewer than three seeds give no verdict.",
    ]
    lines += [POOLED_SENTENCE] if pooled else []
    return [*lines, "", _family_line(rows, compared, pooled), ""]


def markdown_tables(summary: list[dict[str, Any]], splits: Sequence[str] = SPLITS) -> str:
    """Per variant: the paired table, then the unpaired means. Tutors are sorted by their difference on the AUC of the
    last of ``splits`` (the unseen or cross-dataset one), pooled rows first where there are several datasets (with a
    dataset column). Above the table: how it is estimated and its declared family; a difference is bold where it
    belongs to the family and its Holm-adjusted t-test p is below 0.05, beside its unadjusted interval. Below three
    seeds the table gives the differences alone, without interval, verdict or share of the oracle's gain."""
    compared = headline(splits)
    variants = grouped(summary, lambda row: row["variant"])
    return "\n\n".join(_variant_tables(variant, rows, compared, splits) for variant, rows in variants.items()) + "\n"


def _variant_tables(
    variant: str, rows: list[dict[str, Any]], compared: tuple[tuple[str, str, bool], ...], splits: Sequence[str]
) -> str:
    shares = share_of_oracle_columns(splits)
    ranked = f"diff_{splits[-1]}_auc"
    datasets = sorted(dict.fromkeys(row.get("dataset", "") for row in rows), key=lambda dataset: dataset != POOLED)
    several = POOLED in datasets
    rows = sorted(
        rows,
        key=lambda r: (datasets.index(r.get("dataset", "")), r["tutor"] != REFERENCE, -np.nan_to_num(r[ranked], nan=-9.0)),
    )
    pairs = max(r[f"{ranked}_pairs"] for r in rows if r.get("dataset") != POOLED)
    judged = pairs >= MIN_VERDICT_SEEDS
    has_oracle = judged and any(not math.isnan(r[f"share_of_oracle_{shares[0]}"]) for r in rows)
    has_noise = any(not math.isnan(r["noise_auroc"]) for r in rows)
    by_dataset = ["dataset"] if several else []
    header = ["tutor", *by_dataset, "kind", "pairs", *(f"Δ {name}" for name, _, _ in compared)]
    oracle_splits = " / ".join(split_label(split) for split in splits)
    header += [f"share of oracle gain ({oracle_splits} AUC)"] if has_oracle else []
    header += ["noise AUROC"] if has_noise else []
    header += ["verdict vs uniform"] if judged else []
    lines = [f"### {variant}", "", *_paired_preamble(rows, compared, pairs)]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [row["tutor"], *(row["dataset"] for _ in by_dataset), row["kind"], str(row[f"{ranked}_pairs"])]
        if row["tutor"] == REFERENCE:
            cells += ["0"] * len(compared)
        else:
            cells += [_difference_cell(row, column, judged) for _, column, _ in compared]
        if has_oracle:
            gains = [row[f"share_of_oracle_{column}"] for column in shares]
            shown = row["tutor"] not in (REFERENCE, ORACLE)
            cells.append(" / ".join(f"{s:+.0%}" if shown and not math.isnan(s) else "-" for s in gains))
        if has_noise:
            cells.append(_plain_cell(row["noise_auroc"], row["noise_auroc_half"]))
        if judged:
            cells.append("reference" if is_reference(row["tutor"]) else _verdict(row, compared))
        lines.append("| " + " | ".join(cells) + " |")
    columns = [c for c in unpaired_columns(splits) if any(not math.isnan(r[c[1]]) for r in rows)]
    unpaired = "mean ± 95% interval over independent Students" if pairs > 1 else "each Student's value"
    unpaired += ", pooled rows the mean of the datasets' means" if several else ""
    lines += ["", f"Unpaired: {unpaired} (secondary: it hides the effects that pairing shows).", ""]
    header = ["tutor", *by_dataset, "seeds", *(name for name, _ in columns)]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [row["tutor"], *(row["dataset"] for _ in by_dataset), str(row["seeds"])]
        cells += [
            _plain_cell(row[column], row[f"{column}_half"] if pairs > 1 else float("nan"), column == "overhead_vs_uniform")
            for _, column in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def power_table(summary: list[dict[str, Any]], effects: tuple[float, ...] = (0.01, 0.02), splits: Sequence[str] = SPLITS) -> str:
    """Markdown: per variant and test split's AUC, the median paired sd of the non-reference tutors and the pairs needed for each
    effect at 80% power (over several datasets, the sd within each: its rows, not the pooled ones). The oracle (a
    near-constant gain) and uniform are left out."""
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
