"""Calibration of the embedded benchmark: what a uniform-weight Student reaches, with and without label noise.

The targets the defaults are tuned for: seen AUC in [0.80, 0.95], unseen AUC in [0.60, 0.85], and the default
label noise lowering seen AUC by 0.05 to 0.20 against no noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.config import RunConfig
from experiments.records.student_run import StudentRun
from experiments.report import format_table
from experiments.training.student import train_student
from tsrl_env.data import EmbeddedConfig


def calibrate(config: RunConfig, seeds: list[int], out: Path, progress: bool = False) -> str:
    """Train uniform Students at the default label noise and at none, per seed; return a table of test AUCs."""
    default_noise = config.env.dataset_options.get("label_noise", EmbeddedConfig().label_noise)
    runs: dict[tuple[float, int], StudentRun] = {}
    for noise in (default_noise, 0.0):
        for seed in seeds:
            options = {**config.env.dataset_options, "label_noise": noise}
            run_config = RunConfig(env=config.env.replace(dataset_options=options), seed=seed)
            run_dir = out / f"noise{noise:g}_seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            runs[noise, seed] = train_student(run_config, run_dir, "uniform", progress=progress)

    families = sorted({name for run in runs.values() for split in run.test.values() for name in split["family_auc"]})
    header = ["label noise", "seed", "seen AUC", "unseen AUC", "seen video AUC", "unseen video AUC", *families]
    rows = []
    for (noise, seed), run in runs.items():
        family_auc = {**run.test["test_seen"]["family_auc"], **run.test["test_unseen"]["family_auc"]}
        rows.append(
            [
                f"{noise:g}",
                str(seed),
                *(f"{run.test[split][key]:.3f}" for key in ("auc", "video_auc") for split in ("test_seen", "test_unseen")),
                *(f"{family_auc[name]:.3f}" if name in family_auc else "-" for name in families),
            ]
        )
    drops = [runs[0.0, seed].test["test_seen"]["auc"] - runs[default_noise, seed].test["test_seen"]["auc"] for seed in seeds]
    return (
        format_table(header, rows) + f"\n\nseen AUC lost to label noise {default_noise:g}: {np.mean(drops):.3f} (mean over seeds)"
    )
