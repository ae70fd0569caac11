"""Benchmark summaries, paired by seed, tested over a declared family.

Every Student of one seed shares its data, initialisation, warm-up and batch order, so the measurement that tells
tutors apart is the **paired difference** to ``uniform`` at the same seed: its mean over seeds with a 95% Student-t
interval, the t-test's p and a Wilcoxon signed-rank p beside it. Each table declares its comparison family (by default
every tutor outside the references × each test split's AUC); the t-tests' p are Holm-adjusted over it, and a tutor is
called better or worse than uniform only where its adjusted p is below 0.05, and never from fewer than three seeds.
Over several evaluation datasets the pooled difference treats the datasets as fixed strata and the Student seeds as
random within each (:func:`stratified_mean`). The means of independent Students (unpaired, with their own intervals)
stay as a secondary table.

Files: ``runs.csv`` (one row per Student, with its differences to the uniform Student of its seed),
``results.csv`` (one row per variant, dataset and tutor: every paired statistic and the per-seed differences) and the
Markdown of ``results.md``.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from agents import TUTORS
from experiments.config import split_tutor_entry
from experiments.report import split_label, tested_splits
from tsrl_env.files import write_atomically

METRICS = ("auc", "video_auc", "acc", "eer", "ap")
SPLITS = ("test_seen", "test_unseen")
"""The embedded benchmark's test splits; a benchmark on other data has its own (see :func:`benchmark_splits`)."""
REFERENCE = "uniform"
ORACLE = "oracle"
REFERENCES = (REFERENCE, ORACLE, "random")
"""Tutors that measure the setting rather than compete in it (the baseline, the ceiling of noise removal and the
floor): no comparison family includes them."""
POOLED = "pooled"
"""The ``dataset`` of a summary row that pools a variant's evaluation datasets."""
MIN_VERDICT_SEEDS = 3
"""Fewer pairs than this (in any dataset) give the differences alone: no verdict, no share of the oracle's gain."""
ALPHA = 0.05
# Verdicts of a difference that is not judged better or worse, and why.
NO_DIFFERENCE, FEW_SEEDS, OUTSIDE_FAMILY, NO_PAIR = "no difference shown", "fewer than 3 seeds", "not in the family", "no pair"
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
POOLED_SENTENCE = (
    "pooled: datasets as strata, seeds within; generalises to new Student seeds on these datasets, not to new datasets."
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
    """One flat row per run: identifiers (with the record's evaluation ``dataset`` where it names one), test metrics
    on ``splits``, noise detection, weights on flipped vs clean samples, wall time, and each headline metric's
    difference to the uniform Student of the same variant, dataset and seed."""
    rows = []
    for record in records:
        run = record["run"]
        row: dict[str, Any] = {"variant": record["variant"]}
        row |= {"dataset": record["dataset"]} if "dataset" in record else {}
        row |= {"tutor": record["tutor"], "seed": record["seed"]}
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
    uniform = {_pair_key(row): row for row in rows if row["tutor"] == REFERENCE}
    nothing = defaultdict(lambda: float("nan"))
    for row in rows:
        baseline = uniform.get(_pair_key(row), nothing)
        row |= {f"diff_{column}": row[column] - baseline[column] for _, column, _ in headline(splits)}
        row["overhead_vs_uniform"] = row["wall_time_s"] / baseline["wall_time_s"] - 1.0 if baseline["wall_time_s"] else math.nan
    return rows


def _pair_key(row: dict[str, Any]) -> tuple[str, str, int]:
    """Students that share their data and seed: same variant, evaluation dataset (rows without one: "") and seed."""
    return row["variant"], row.get("dataset", ""), row["seed"]


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """``rows`` as CSV, written atomically; a column some rows lack (a state column only one tutor observed) is left
    empty in them."""
    fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, text.getvalue())


def stratified_mean(groups: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """The mean of the groups' means, its standard error and its degrees of freedom (NaN values dropped).

    The groups (evaluation datasets) are fixed strata and the values within each (Students of different seeds) are
    random: the standard error is sqrt(Σ_d s_d²/n_d) / D over the D groups, with Welch–Satterthwaite degrees of
    freedom (Σ_d v_d)² / Σ_d v_d²/(n_d − 1), v_d = s_d²/n_d. One group gives the ordinary s/√n and n − 1. The mean is
    NaN when a group has no value (averaging the others would drop a stratum); the standard error and degrees of
    freedom are NaN when a group has a single value (its spread is unknown).
    """
    data = [np.asarray([v for v in group if not math.isnan(v)], dtype=float) for group in groups]
    if not data or any(len(values) == 0 for values in data):
        return float("nan"), float("nan"), float("nan")
    mean = float(np.mean([values.mean() for values in data]))
    if any(len(values) < 2 for values in data):
        return mean, float("nan"), float("nan")
    variances = np.array([values.var(ddof=1) / len(values) for values in data])
    dof = np.array([len(values) - 1 for values in data])
    # Every spread 0: no Satterthwaite ratio, and none is needed (t_test gives a zero-width interval).
    df = variances.sum() ** 2 / (variances**2 / dof).sum() if variances.any() else float(dof.sum())
    return mean, math.sqrt(variances.sum()) / len(data), float(df)


def t_test(mean: float, se: float, df: float) -> tuple[float, float]:
    """Half-width of the 95% Student-t interval of ``mean`` and the two-sided p of the t-test of mean 0, NaN without a
    standard error. A zero standard error (the same difference at every seed) gives a zero-width interval and p = 0,
    or p = 1 where that difference is 0."""
    if math.isnan(se):
        return float("nan"), float("nan")
    if se == 0:
        return 0.0, float(mean == 0)
    return float(stats.t.ppf(1 - ALPHA / 2, df) * se), float(2 * stats.t.sf(abs(mean) / se, df))


def mean_interval(*groups: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% Student-t interval (NaN half-width for a single value); of several groups (one per
    evaluation dataset), the stratified mean of :func:`stratified_mean` and its interval."""
    mean, se, df = stratified_mean(groups)
    return mean, t_test(mean, se, df)[0]


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided p of the Wilcoxon signed-rank test of differences centred on 0 (scipy's, exact where scipy computes
    it exactly); NaN below two differences or when every one is 0. Beside the t-test it shows whether a mean rests on
    the signs of most seeds or on one large difference."""
    values = np.asarray([v for v in differences if not math.isnan(v)], dtype=float)
    if len(values) < 2 or not values.any():
        return float("nan")
    return float(stats.wilcoxon(values, alternative="two-sided").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (Holm 1979) of one family's p-values: the i-th smallest of m times (m − i + 1), made
    non-decreasing in that order and capped at 1. It holds the family-wise error rate under any dependence between
    the tests (the differences of one table share their uniform Students). NaN stays NaN and does not count in m.
    Written here because scipy has none and statsmodels is not a dependency."""
    p = np.asarray(p_values, dtype=float)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    adjusted = np.full(len(p), np.nan)
    adjusted[order] = np.minimum(np.maximum.accumulate(p[order] * (len(order) - np.arange(len(order)))), 1.0)
    return adjusted.tolist()


@dataclass(frozen=True)
class PairedDifference:
    """A tutor's difference to uniform (or to another tutor) on one metric, pair by pair, with the mean's 95% interval
    and its tests; over several evaluation datasets the mean is stratified (:func:`stratified_mean`)."""

    per_seed: dict[Any, float]  # seed -> difference; over several datasets, "dataset/seed" -> difference
    mean: float
    half_width: float  # NaN below two pairs (in any dataset)
    sd: float  # of the per-seed differences; NaN below two pairs, and over several datasets (each has its own)
    p: float  # two-sided t-test of mean 0 (stratified over several datasets); NaN where half_width is
    p_wilcoxon: float  # two-sided Wilcoxon signed-rank test over every pair (see wilcoxon_p)
    fewest_pairs: int  # in any one dataset

    @classmethod
    def of(cls, per_seed: dict[int, float]) -> PairedDifference:
        """The difference over the seeds of one dataset."""
        return cls.stratified({"": per_seed})

    @classmethod
    def stratified(cls, by_dataset: dict[str, dict[int, float]]) -> PairedDifference:
        """The difference pooled over datasets (each one's seeds -> differences): the mean of the datasets' mean
        differences, datasets as fixed strata and seeds random within each, with its Welch–Satterthwaite t interval
        and t-test. The Wilcoxon test ranks every pair together. A dataset without a pair makes it NaN."""
        kept = {
            dataset: {seed: value for seed, value in sorted(values.items()) if not math.isnan(value)}
            for dataset, values in by_dataset.items()
        }
        mean, se, df = stratified_mean([list(values.values()) for values in kept.values()])
        half, p = t_test(mean, se, df)
        if len(kept) == 1:
            (per_seed,) = kept.values()
        else:
            per_seed = {f"{dataset}/{seed}": value for dataset, values in kept.items() for seed, value in values.items()}
        values = list(per_seed.values())
        sd = float(np.std(values, ddof=1)) if len(kept) == 1 and len(values) > 1 else float("nan")
        return cls(per_seed, mean, half, sd, p, wilcoxon_p(values), min(len(v) for v in kept.values()))

    @property
    def pairs(self) -> int:
        return len(self.per_seed)

    @property
    def interval(self) -> tuple[float, float]:
        return self.mean - self.half_width, self.mean + self.half_width

    def verdict(self, higher_is_better: bool, p: float | None = None) -> str:
        """``better`` or ``worse`` where the t-test's p is below 0.05, else ``no difference shown``. ``p`` is the
        Holm-adjusted p of the family the difference is judged in; by default its own p (a family of one). Fewer than
        three pairs in any dataset give no verdict: ``fewer than 3 seeds`` (``no pair`` without any)."""
        if self.pairs == 0:
            return NO_PAIR
        if self.fewest_pairs < MIN_VERDICT_SEEDS:
            return FEW_SEEDS
        if not (self.p if p is None else p) < ALPHA:
            return NO_DIFFERENCE
        return "better" if (self.mean > 0) == higher_is_better else "worse"


def _grouped(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return dict(groups)


def _is_reference(entry: str) -> bool:
    return split_tutor_entry(entry)[0] in REFERENCES


def _cells(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, list[dict[str, Any]]]]:
    """One variant's summary cells, (dataset, tutor) -> the runs of each dataset the cell covers: one cell per dataset
    and tutor, then, with several datasets, one pooled cell per tutor over all of them (a dataset the tutor lacks is
    empty, which leaves its pooled statistics NaN)."""
    runs = _grouped(rows, lambda row: (row.get("dataset", ""), row["tutor"]))
    cells = {(dataset, tutor): {dataset: group} for (dataset, tutor), group in runs.items()}
    datasets = list(dict.fromkeys(dataset for dataset, _ in runs))
    if len(datasets) > 1:
        for tutor in dict.fromkeys(tutor for _, tutor in runs):
            cells[POOLED, tutor] = {dataset: runs.get((dataset, tutor), []) for dataset in datasets}
    return cells


def paired_summary(
    rows: list[dict[str, Any]], splits: Sequence[str] = SPLITS, family_columns: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One row per variant, dataset and tutor: for every headline metric on ``splits`` the paired difference to
    uniform (mean, unadjusted 95% interval, pairs, sd, t-test p, Holm-adjusted p, Wilcoxon p, verdict, per-seed
    values), the share of the oracle's gain, the noise-detection AUROC and the unpaired mean ± interval of each metric.

    Rows with a ``dataset`` key name their evaluation dataset (rows without one are one dataset). A variant with
    several datasets gets each dataset's rows and then one pooled row per tutor (dataset ``pooled``): datasets as
    fixed strata, Student seeds random within each (:func:`stratified_mean`: the mean of the per-dataset mean
    differences, standard error sqrt(Σ_d s_d²/n_d)/D, Welch–Satterthwaite degrees of freedom, t interval and t-test),
    which generalises to new Student seeds on these datasets, not to new datasets.

    A variant's comparison family is ``family_columns`` (default: each test split's AUC) × every tutor outside
    :data:`REFERENCES` with at least three pairs in each dataset, on its pooled rows where there are several datasets.
    Its t-test p are Holm-adjusted together, and only a member whose adjusted p is below 0.05 is called better or
    worse; every other difference keeps its interval and p, with a verdict that says why it has none. No share of the
    oracle's gain is given from fewer than three seeds.
    """
    compared = headline(splits)
    family = share_of_oracle_columns(splits) if family_columns is None else tuple(family_columns)
    with_dataset = any("dataset" in row for row in rows)
    summary = []
    for variant, variant_rows in _grouped(rows, lambda row: row["variant"]).items():
        cells = _cells(variant_rows)
        differences = {
            cell: {
                column: PairedDifference.stratified(
                    {dataset: {r["seed"]: r[f"diff_{column}"] for r in runs} for dataset, runs in strata.items()}
                )
                for _, column, _ in compared
            }
            for cell, strata in cells.items()
        }
        judged_rows = POOLED if any(dataset == POOLED for dataset, _ in cells) else None
        members = [
            (cell, column)
            for cell in cells
            for column in family
            if not _is_reference(cell[1])
            and (judged_rows is None or cell[0] == judged_rows)
            and differences[cell][column].fewest_pairs >= MIN_VERDICT_SEEDS
            and not math.isnan(differences[cell][column].p)
        ]
        adjusted = dict(zip(members, holm([differences[cell][column].p for cell, column in members]), strict=True))
        for (dataset, tutor), strata in cells.items():
            out: dict[str, Any] = {"variant": variant, **({"dataset": dataset} if with_dataset else {}), "tutor": tutor}
            out |= {"kind": _kind(tutor), "seeds": sum(len(runs) for runs in strata.values())}
            for _, column, higher in compared:
                p_holm = adjusted.get(((dataset, tutor), column), float("nan"))
                out |= _difference_fields(column, differences[dataset, tutor][column], higher, p_holm)
            for column in share_of_oracle_columns(splits):
                oracle = differences.get((dataset, ORACLE), {}).get(column)
                out[f"share_of_oracle_{column}"] = _share_of_oracle(differences[dataset, tutor][column], oracle)
            for column in ("noise_auroc", *(column for _, column in unpaired_columns(splits))):
                values = [[r[column] for r in runs] for runs in strata.values()]
                out[column], out[f"{column}_half"] = mean_interval(*values)
            summary.append(out)
    return summary


def _difference_fields(column: str, difference: PairedDifference, higher: bool, p_holm: float) -> dict[str, Any]:
    """A summary row's columns for one paired difference; ``p_holm`` is NaN outside the comparison family."""
    low, high = difference.interval
    outside = math.isnan(p_holm) and difference.fewest_pairs >= MIN_VERDICT_SEEDS
    return {
        f"diff_{column}": difference.mean,
        f"diff_{column}_low": low,
        f"diff_{column}_high": high,
        f"diff_{column}_pairs": difference.pairs,
        f"diff_{column}_sd": difference.sd,
        f"diff_{column}_p": difference.p,
        f"diff_{column}_p_holm": p_holm,
        f"diff_{column}_p_wilcoxon": difference.p_wilcoxon,
        f"diff_{column}_verdict": OUTSIDE_FAMILY if outside else difference.verdict(higher, p_holm),
        f"diff_{column}_per_seed": ";".join(f"{seed}:{value:+.4f}" for seed, value in difference.per_seed.items()),
    }


def _share_of_oracle(own: PairedDifference, oracle: PairedDifference | None) -> float:
    """A tutor's paired gain over the oracle's; NaN where the oracle gains nothing or either rests on fewer than three
    seeds in a dataset."""
    if oracle is None or min(own.fewest_pairs, oracle.fewest_pairs) < MIN_VERDICT_SEEDS or not oracle.mean > 0:
        return float("nan")
    return own.mean / oracle.mean


def _kind(entry: str) -> str:
    tutor, _ = split_tutor_entry(entry)
    if tutor == ORACLE:
        return "reference"
    return TUTORS[tutor].kind if tutor in TUTORS else "heuristic"


def _signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.3f}"


def _interval_text(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return "-"
    return _signed(mean) if math.isnan(low) else f"{_signed(mean)} [{_signed(low)}, {_signed(high)}]"


def _p_text(p: float) -> str:
    return "-" if math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _difference_cell(row: dict[str, Any], column: str, intervals: bool) -> str:
    mean, low, high = row[f"diff_{column}"], row[f"diff_{column}_low"], row[f"diff_{column}_high"]
    text = _interval_text(mean, low if intervals else float("nan"), high)
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
        not _is_reference(row["tutor"]) and row[f"diff_{column}_verdict"] == FEW_SEEDS
        for row in rows
        for _, column, _ in compared
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
    variants = _grouped(summary, lambda row: row["variant"])
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
            cells.append("reference" if _is_reference(row["tutor"]) else _verdict(row, compared))
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


def paired_between(out: Path, tutor: str, against: str) -> str:
    """Markdown: ``tutor`` − ``against`` on each headline metric of a finished grid in ``out`` (its ``runs.csv``),
    paired by variant, dataset and seed like every difference to uniform (both were trained on the same Students),
    with the t-test, its Holm-adjusted and the Wilcoxon p. The family, declared above the table, is every row it
    prints; over several datasets, every pooled row (:meth:`PairedDifference.stratified`), the per-dataset rows beside
    them unadjusted."""
    with (out / "runs.csv").open() as handle:
        runs = list(csv.DictReader(handle))
    metrics = [name.removeprefix("diff_") for name in runs[0] if name.startswith("diff_")]
    values = {(row["variant"], row.get("dataset") or "", row["tutor"], int(row["seed"])): row for row in runs}
    entries = []  # (variant, dataset, metric, difference, in the family)
    for variant in dict.fromkeys(row["variant"] for row in runs):
        datasets = list(dict.fromkeys(dataset for v, dataset, _, _ in values if v == variant))
        seeds = {
            dataset: [s for v, d, t, s in values if (v, d, t) == (variant, dataset, tutor) and (v, d, against, s) in values]
            for dataset in datasets
        }
        for metric in metrics:
            by_dataset = {
                dataset: {
                    s: float(values[variant, dataset, tutor, s][metric]) - float(values[variant, dataset, against, s][metric])
                    for s in seeds[dataset]
                }
                for dataset in datasets
            }
            entries += [(variant, d, metric, PairedDifference.of(by_dataset[d]), len(datasets) == 1) for d in datasets]
            if len(datasets) > 1:
                entries.append((variant, POOLED, metric, PairedDifference.stratified(by_dataset), True))
    family = [index for index, entry in enumerate(entries) if entry[4]]
    adjusted = dict(zip(family, holm([entries[index][3].p for index in family]), strict=True))
    several = any(entry[1] == POOLED for entry in entries)
    by_dataset_column = ["dataset"] if several else []
    header = ["variant", *by_dataset_column, "metric", "pairs", f"{tutor} − {against} [95% interval]", "p", "Holm p"]
    lines = [
        f"Family: every {'pooled ' if several else ''}row below ({len(family)}); Holm-adjusted p"
        + ("; pooled: datasets as strata, seeds within; the per-dataset rows unadjusted." if several else "."),
        "",
        "| " + " | ".join([*header, "Wilcoxon p", "per seed"]) + " |",
        "|" + " --- |" * (len(header) + 2),
    ]
    for index, (variant, dataset, metric, difference, _) in enumerate(entries):
        cells = [variant, *(dataset for _ in by_dataset_column), metric, str(difference.pairs)]
        cells += [_interval_text(difference.mean, *difference.interval), _p_text(difference.p)]
        cells += [_p_text(adjusted.get(index, float("nan"))), _p_text(difference.p_wilcoxon)]
        cells.append(", ".join(f"{value:+.3f}" for value in difference.per_seed.values()))
        lines.append("| " + " | ".join(cells) + " |")
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
