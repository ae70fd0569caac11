"""One tutor against another on a finished grid, paired by seed as every difference to ``uniform`` is:

    python -m experiments.analysis.compare OUT TUTOR AGAINST
    python -m experiments.analysis.compare OUT TUTOR AGAINST --variants A B
    python -m experiments.analysis.compare OUT TUTOR AGAINST --metrics test_seen_auc
    python -m experiments.analysis.compare OUT:V1,V2 OTHER_OUT TUTOR AGAINST

prints, per variant (and evaluation dataset) and headline metric, ``TUTOR`` − ``AGAINST`` with its 95% interval, the
t-test's p, its Holm-adjusted p over the rows printed and the Wilcoxon p, from the grid's ``runs.csv``. With
``--variants A B``, ``TUTOR`` of variant A against ``AGAINST`` of variant B (the same tutor under two settings, say),
paired by dataset and seed: variants of one grid share their seeds' data, initialisation and warm-up. With
``--metrics``, those headline metrics alone: the family declared before a comparison ran, when it named fewer. Several
grids make one family (a comparison whose variants ran in two folders); ``OUT:V1,V2`` reads only those variants of
``OUT`` (a folder that also holds a variant outside the family, unfinished say).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.analysis.statistics import PairedDifference, holm
from experiments.analysis.summary import POOLED
from experiments.analysis.tables import interval_text, p_text


@dataclass(frozen=True)
class GridRows:
    """A finished grid's output folder and the variants read from it (every variant when ``variants`` is empty)."""

    out: Path
    variants: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> GridRows:
        """``FOLDER`` or ``FOLDER:VARIANT[,VARIANT...]``, as the command line gives it."""
        folder, colon, names = text.rpartition(":")
        if not colon or "/" in names:
            return cls(Path(text))
        variants = tuple(name for name in names.split(",") if name)
        if not variants:
            raise ValueError(f"{text!r}: no variant after the colon; give FOLDER:VARIANT[,VARIANT...] or the folder alone")
        return cls(Path(folder), variants)

    def read(self) -> list[dict[str, str]]:
        """The rows of its ``runs.csv``, of the variants asked for; an error names a missing file or variant."""
        path = self.out / "runs.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; give the output folder of a finished grid (tsrl benchmark --out)")
        with path.open() as handle:
            runs = list(csv.DictReader(handle))
        if not runs:
            raise ValueError(f"{path}: no finished cell; run the grid (tsrl benchmark) before comparing its tutors")
        missing = sorted({"variant", "tutor", "seed"} - set(runs[0]))
        if missing:
            raise ValueError(f"{path}: no column {missing}; give the runs.csv that tsrl benchmark writes")
        known = list(dict.fromkeys(row["variant"] for row in runs))
        if not set(self.variants) <= set(known):
            raise ValueError(
                f"{self.out}: no variant {sorted(set(self.variants) - set(known))} in runs.csv; its variants are {known}"
            )
        return [row for row in runs if not self.variants or row["variant"] in self.variants]


def paired_between(
    grids: Path | GridRows | Sequence[Path | GridRows],
    tutor: str,
    against: str,
    variants: tuple[str, str] | None = None,
    metrics: Sequence[str] | None = None,
) -> str:
    """Markdown: ``tutor`` − ``against`` on each headline metric of finished grids (their ``runs.csv``), paired by
    variant, dataset and seed like every difference to uniform (both were trained on the same Students), with the
    t-test, its Holm-adjusted and the Wilcoxon p; with ``variants=(a, b)``, ``tutor`` of variant ``a`` against
    ``against`` of variant ``b``, paired by dataset and seed (one grid). The family, declared above the table, is every
    row it prints, over all ``grids``; over several datasets, every pooled row (:meth:`PairedDifference.stratified`),
    the per-dataset rows beside them unadjusted. ``metrics`` (CSV columns such as ``test_seen_auc``) keeps those
    headline metrics alone. Over several grids a variant is named ``FOLDER/VARIANT``."""
    grids = [grids] if isinstance(grids, (Path, GridRows)) else list(grids)
    grids = [grid if isinstance(grid, GridRows) else GridRows(Path(grid)) for grid in grids]
    if variants is not None:
        if len(grids) > 1:
            raise ValueError("--variants pairs two variants of one grid; give one folder with it")
        grids = [GridRows(grids[0].out, tuple(dict.fromkeys(variants)))]
    names = [grid.out.resolve().name for grid in grids]
    if len(grids) > 1 and len(set(names)) < len(names):
        raise ValueError(f"folders {[str(grid.out) for grid in grids]} share a last name; their rows are labelled by it")
    runs = []
    for grid, name in zip(grids, names, strict=True):
        runs += [row | {"variant": f"{name}/{row['variant']}"} if len(grids) > 1 else row for row in grid.read()]
    headline = [name.removeprefix("diff_") for name in runs[0] if name.startswith("diff_")]
    unknown = sorted(set(metrics or ()) - set(headline))
    if unknown:
        raise ValueError(f"{grids[0].out}: no headline metric {unknown} in runs.csv; its headline metrics are {headline}")
    metrics = [name for name in headline if name in metrics] if metrics else headline
    values = {(row["variant"], row.get("dataset") or "", row["tutor"], int(row["seed"])): row for row in runs}
    known = list(dict.fromkeys(row["variant"] for row in runs))
    sides = [variants] if variants is not None else [(variant, variant) for variant in known]
    entries = []  # (variant, dataset, metric, difference, in the family)
    for first, second in sides:
        label = first if first == second else f"{first} − {second}"
        datasets = list(dict.fromkeys(dataset for v, dataset, _, _ in values if v == first))
        seeds = {
            dataset: [s for v, d, t, s in values if (v, d, t) == (first, dataset, tutor) and (second, d, against, s) in values]
            for dataset in datasets
        }
        datasets = [dataset for dataset in datasets if seeds[dataset]]
        for metric in metrics:
            by_dataset = {
                dataset: {
                    s: float(values[first, dataset, tutor, s][metric]) - float(values[second, dataset, against, s][metric])
                    for s in seeds[dataset]
                }
                for dataset in datasets
            }
            entries += [(label, d, metric, PairedDifference.of(by_dataset[d]), len(datasets) == 1) for d in datasets]
            if len(datasets) > 1:
                entries.append((label, POOLED, metric, PairedDifference.stratified(by_dataset), True))
    if not entries:
        raise ValueError(
            f"no seed has both {tutor!r} and {against!r} in {[str(grid.out) for grid in grids]}; check the tutor names"
        )
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
        cells += [interval_text(difference.mean, *difference.interval), p_text(difference.p)]
        cells += [p_text(adjusted.get(index, float("nan"))), p_text(difference.p_wilcoxon)]
        cells.append(", ".join(f"{value:+.3f}" for value in difference.per_seed.values()))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.analysis.compare", description="one tutor against another, paired by seed, on a finished grid"
    )
    parser.add_argument(
        "grids",
        nargs="+",
        metavar="OUT[:VARIANT,...]",
        help="a grid's output folder (holding runs.csv), several for one family; :V1,V2 reads only those variants",
    )
    parser.add_argument("tutor")
    parser.add_argument("against")
    parser.add_argument(
        "--variants", nargs=2, metavar=("A", "B"), help="TUTOR of variant A against AGAINST of variant B, by dataset and seed"
    )
    parser.add_argument("--metrics", nargs="+", help="only these headline metrics (runs.csv columns, e.g. test_seen_auc)")
    arguments = parser.parse_args(argv)
    variants = tuple(arguments.variants) if arguments.variants else None
    try:
        grids = [GridRows.parse(text) for text in arguments.grids]
        table = paired_between(grids, arguments.tutor, arguments.against, variants, arguments.metrics)
    except (ValueError, FileNotFoundError) as error:  # what the user gave is wrong: its message, not a traceback
        parser.error(str(error))
    print(table)


if __name__ == "__main__":
    main()
