"""Paired statistics: the difference between two tutors' Students of the same seed, its 95% interval and tests.

Every Student of one seed shares its data, initialisation, warm-up and batch order, so the measurement that tells
tutors apart is the **paired difference** at the same seed: its mean over seeds with a 95% Student-t interval, the
t-test's p and a Wilcoxon signed-rank p beside it (:class:`PairedDifference`). Over several evaluation datasets the
pooled difference treats the datasets as fixed strata and the Student seeds as random within each
(:func:`stratified_mean`). A family of differences is Holm-adjusted together (:func:`holm`), and a difference is
called better or worse only where its adjusted p is below 0.05, and never from fewer than three seeds.
:func:`seeds_needed` gives the pairs a difference needs for a given power.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

MIN_VERDICT_SEEDS = 3
"""Fewer pairs than this (in any dataset) give the differences alone: no verdict, no share of the oracle's gain."""
ALPHA = 0.05
# Verdicts of a difference that is not judged better or worse, and why.
NO_DIFFERENCE, FEW_SEEDS, OUTSIDE_FAMILY, NO_PAIR = "no difference shown", "fewer than 3 seeds", "not in the family", "no pair"


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


@dataclass
class GroupMoments:
    """Count, sum and sum of squares of a per-sample value on clean and on flipped labels: enough to pool runs and to
    compare the two groups (their gap, pooled sd and the gap's standard error)."""

    counts: list[int] = field(default_factory=lambda: [0, 0])
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0])
    squares: list[float] = field(default_factory=lambda: [0.0, 0.0])

    def add(self, values: np.ndarray, flipped: np.ndarray) -> None:
        for group, mask in enumerate((~flipped, flipped)):
            chosen = values[mask].astype(np.float64)
            self.counts[group] += len(chosen)
            self.sums[group] += float(chosen.sum())
            self.squares[group] += float((chosen**2).sum())

    def merged(self, other: GroupMoments) -> GroupMoments:
        return GroupMoments(
            [a + b for a, b in zip(self.counts, other.counts, strict=True)],
            [a + b for a, b in zip(self.sums, other.sums, strict=True)],
            [a + b for a, b in zip(self.squares, other.squares, strict=True)],
        )

    def signal(self) -> dict[str, float]:
        """The clean-minus-flipped gap of the means, the pooled within-group sd, and the gap over its standard error."""
        n = np.asarray(self.counts, np.float64)
        means = np.asarray(self.sums) / n
        within = np.asarray(self.squares) - n * means**2
        pooled = float(np.sqrt(within.sum() / (n.sum() - 2)))
        gap = float(means[0] - means[1])
        standard_error = pooled * float(np.sqrt((1 / n).sum()))
        return {"gap": gap, "sd": pooled, "snr": gap / pooled, "gap_over_standard_error": gap / standard_error}
