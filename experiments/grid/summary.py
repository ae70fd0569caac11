"""A grid's summary files, rebuilt from every finished cell at the end of each ``tsrl benchmark``: ``runs.csv``,
``results.csv``, ``state_columns.csv``, ``results.md`` and the plots."""

from __future__ import annotations

from pathlib import Path

from experiments.analysis.plots import plot_paired_differences, plot_validation_curves, plot_weight_distributions, plot_weighting
from experiments.analysis.summary import benchmark_splits, learns, paired_summary, result_rows, state_column_rows, write_csv
from experiments.analysis.tables import markdown_tables, power_table, state_column_table
from experiments.config import SettingsChanged
from experiments.grid.cells import changed_cells, changed_report, load_records
from experiments.grid.plan import plan_report
from experiments.grid.spec import BenchmarkConfig
from tsrl_env.files import write_atomically


def write_summary(config: BenchmarkConfig, out: Path) -> str:
    """Rebuild ``runs.csv``, ``results.csv``, ``state_columns.csv``, ``results.md`` and the plots from every finished
    cell; return the Markdown."""
    changed = changed_cells(config, out)
    if changed:
        raise SettingsChanged(
            f"{changed_report(out, changed)}\nA summary would mix them with the settings given now: give the config "
            "they were computed with, or run the benchmark with --rerun-changed to compute them again"
        )
    records = load_records(config, out)
    if not records:
        raise RuntimeError(f"no finished cell under {out / 'cells'}; run the benchmark first")
    splits = benchmark_splits(records)
    rows = result_rows(records, splits)
    write_csv(rows, out / "runs.csv")
    summary = paired_summary(rows, splits)
    write_csv(summary, out / "results.csv")
    total = len(list(config.cells()))
    markdown = f"# Benchmark results\n\n{plan_report(out, config.protocol)}\n{len(records)} of {total} runs finished.\n\n"
    markdown += markdown_tables(summary, splits)
    power = power_table(summary, splits=splits)
    if power:
        markdown += "\n## Power\n\nSeeds a paired comparison needs, from the spread of the differences measured here.\n\n" + power
    columns = state_column_rows(records)
    if columns:
        write_csv(columns, out / "state_columns.csv")
        markdown += "\n## What the state reveals\n\n" + state_column_table(columns)
    write_atomically(out / "results.md", markdown)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    plot_validation_curves(records, plots / "val_auc.png")
    plot_paired_differences(summary, plots / "paired_differences.png")
    # Uniform gives every sample weight 1: nothing to show on the weighting plot.
    finished = {record["tutor"] for record in records}
    weighted = [t for t in sorted(config.tutors, key=lambda t: not learns(t)) if t in finished and t != "uniform"]
    for variant in sorted({record["variant"] for record in records}):
        plot_weight_distributions(records, variant, plots / f"weights_{variant}.png")
        if weighted:
            plot_weighting(records, variant, weighted, plots / f"weighting_{variant}.png")
    return markdown
