"""A grid's summary rows: one flat row per Student (``runs.csv``), and per variant, dataset and tutor the paired
difference to ``uniform`` of every headline metric with its tests and verdict (``results.csv``).

Each table declares its comparison family (by default every tutor outside the references × each test split's AUC);
the t-tests' p are Holm-adjusted over it (:mod:`experiments.analysis.statistics`). The means of independent Students
(unpaired, with their own intervals) stay as secondary columns. :mod:`experiments.analysis.tables` writes them as
Markdown.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents import TUTORS
from experiments.analysis.statistics import (
    MIN_VERDICT_SEEDS,
    OUTSIDE_FAMILY,
    PairedDifference,
    holm,
    mean_interval,
)
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
    """One flat row per run: identifiers (with the record's evaluation ``dataset`` where it names one), test metrics
    on ``splits``, noise detection, weights on flipped vs clean samples, wall time, the cell that trained the Student
    where another did (``same_student_as``), and each headline metric's difference to the uniform Student of the same
    variant, dataset and seed."""
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
        row |= {"same_student_as": record["same_student_as"]} if "same_student_as" in record else {}
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


def grouped(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return dict(groups)


def is_reference(entry: str) -> bool:
    return split_tutor_entry(entry)[0] in REFERENCES


def _cells(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, list[dict[str, Any]]]]:
    """One variant's summary cells, (dataset, tutor) -> the runs of each dataset the cell covers: one cell per dataset
    and tutor, then, with several datasets, one pooled cell per tutor over all of them (a dataset the tutor lacks is
    empty, which leaves its pooled statistics NaN)."""
    runs = grouped(rows, lambda row: (row.get("dataset", ""), row["tutor"]))
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
    for variant, variant_rows in grouped(rows, lambda row: row["variant"]).items():
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
            if not is_reference(cell[1])
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
