"""How long a grid takes: its wall time estimated from measured cells, for the listing of ``tsrl benchmark``."""

from __future__ import annotations

import json
import math

from experiments.config import CONFIG_DIR, read_yaml_config
from experiments.grid.spec import BenchmarkConfig, load_benchmark_config
from tsrl_env.data import EmbeddedConfig

# Seconds of one core per training image and epoch, everything a cell does included (forwards, weighted updates,
# evaluations), at the image size given: the median cell of a grid run on the 2-core build machine with one torch
# thread per cell (benchmark_noise's 108 cells, 61.6 s each for 3,000 images x 6 epochs; smoke's 6 cells, 2.0 s
# for 256 x 3). Other machines, backbones or datasets: no estimate.
MEASURED_COST_PER_IMAGE_EPOCH = {"regnetx_002": (64, 61.6 / (3000 * 6)), "test_resnet": (32, 2.0 / (256 * 3))}


def estimated_wall_time_s(config: BenchmarkConfig, workers: int) -> float:
    """The grid's wall time on the 2-core build machine with ``workers`` cells at once; NaN where not measured. Cells
    of the same Student (the same settings) count once, as the grid trains them once."""
    total = 0.0
    runs = (config.run_config(*cell) for cell in config.cells())
    students = {json.dumps(run.to_dict(), sort_keys=True): run for run in runs}
    for student in students.values():
        env = student.env
        if env.dataset != "embedded" or env.backbone not in MEASURED_COST_PER_IMAGE_EPOCH:
            return float("nan")
        measured_size, cost = MEASURED_COST_PER_IMAGE_EPOCH[env.backbone]
        options = EmbeddedConfig.filled(env.dataset_options)
        size = env.image_size or options["image_size"]
        total += cost * options["train_size"] * (env.warmup_epochs + env.epochs) * (size / measured_size) ** 2
    return total / workers


def available_benchmarks(workers: int = 2) -> list[tuple[str, BenchmarkConfig, float]]:
    """Every benchmark config under ``experiments/configs`` (those listing ``tutors``) with its estimated wall time."""
    found = []
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        if "tutors" in (read_yaml_config(path) or {}):
            config = load_benchmark_config(path)
            found.append((path.stem, config, estimated_wall_time_s(config, workers)))
    return sorted(found, key=lambda item: (math.isnan(item[2]), item[2]))
