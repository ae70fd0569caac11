"""Benchmark grids (``tsrl benchmark``): a grid's spec (:mod:`~experiments.grid.spec`), its plan
(:mod:`~experiments.grid.plan`), running its cells (:mod:`~experiments.grid.runner`, on Ray:
:mod:`~experiments.grid.ray_backend`), its cells on disk (:mod:`~experiments.grid.cells`), its summary files
(:mod:`~experiments.grid.summary`) and its estimated wall time (:mod:`~experiments.grid.estimate`).

The three calls a notebook needs, here: ``load_benchmark_config``, ``run_benchmark`` and ``write_summary``.
"""

from experiments.grid.runner import run_benchmark
from experiments.grid.spec import load_benchmark_config
from experiments.grid.summary import write_summary

__all__ = ["load_benchmark_config", "run_benchmark", "write_summary"]
