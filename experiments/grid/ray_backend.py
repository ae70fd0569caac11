"""The benchmark grid on Ray: each unfinished cell is one Ray task that runs the same per-cell function as the
local process pool, so its record (and the summary built from the records) is the same whichever backend ran it.

Each task asks Ray for as many CPUs as the Student's torch threads and, when the cell's device is CUDA, one GPU,
so Ray runs as many cells at once as the machine or cluster has room for. The task writes its record itself: on a
cluster, the output directory must be on a filesystem every node mounts at the same path.

Ray is an optional dependency (``pip install .[ray]``); only the Ray backend of ``run_benchmark`` imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from experiments.grid.cells import report_failed_cell
from tsrl_env.student import resolve_device

try:
    import ray
except ImportError as error:
    raise ImportError(
        "the Ray backend of tsrl benchmark needs Ray, which is not installed: run pip install '.[ray]' in the project "
        "(or pip install 'tsrl[ray]'), or use the default local backend (--backend local)"
    ) from error


def gpus_per_cell(device: str) -> int:
    """The GPUs a cell on ``device`` asks Ray for: one when it trains on CUDA, else none.

    Ray chooses the GPU and makes it the task's only visible one, so a device naming a GPU index is refused.
    ``"auto"`` resolves on the machine that submits the grid.
    """
    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return 0
    if resolved.index is not None:
        raise ValueError(
            f"device {device!r} names a GPU, but on the Ray backend Ray gives each cell its GPU (the only one the cell "
            "sees); set the env device to 'cuda' (or 'auto')"
        )
    return 1


def run_cells_on_ray(
    run_cell: Callable[[dict[str, Any], str, int], str],
    cells: list[tuple[dict[str, Any], Path]],
    cpus_per_cell: int,
    local_cells: int,
    address: str | None = None,
) -> Iterator[str]:
    """Run ``run_cell(run_config, directory, cpus_per_cell)`` for every (run config, directory) in ``cells`` as one
    Ray task, and yield each record's path as its task finishes.

    Without ``address`` a local Ray instance of ``local_cells * cpus_per_cell`` CPUs is started (``local_cells``
    cells at once, as the local pool's workers) and shut down at the end; with it, the tasks go to the running
    cluster at that address, whose nodes must have this project installed. Nothing is started for no cells. A
    failed cell's error is raised once every other cell has finished.
    """
    if not cells:
        return
    resources = [{"num_cpus": cpus_per_cell, "num_gpus": gpus_per_cell(config["env"]["device"])} for config, _ in cells]
    if address is None:
        # "local" starts a new instance even when RAY_ADDRESS points at a cluster.
        ray.init(address="local", num_cpus=local_cells * cpus_per_cell, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        needed = max(request["num_gpus"] for request in resources)
        if address is None and needed > ray.cluster_resources().get("GPU", 0):
            raise RuntimeError(
                "cells of this grid train on CUDA but Ray finds no GPU on this machine; set the env device to 'cpu' "
                "in the config, or connect to a cluster with GPUs with --address"
            )
        task = ray.remote(_call)  # ray.remote takes a function; run_cell may be a partial
        # Absolute paths: a Ray worker need not share this process's working directory (on a cluster, not even its machine).
        pending = {
            task.options(**request).remote(run_cell, config, str(directory.resolve()), cpus_per_cell): directory
            for (config, directory), request in zip(cells, resources, strict=True)
        }
        failure: ray.exceptions.RayError | None = None
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            directory = pending.pop(done)
            try:
                written = Path(ray.get(done))
            except ray.exceptions.RayError as error:
                # As in the local pool, a failed cell does not stop the others: they finish and keep their records.
                report_failed_cell(directory, error)
                failure = failure or error
                continue
            # The path as the caller gave it, so that it can name the cell relative to its own output directory.
            record = directory / written.name
            if not record.exists():
                raise RuntimeError(
                    f"a Ray task wrote {written} but it is not visible on this machine: on a cluster, give an --out "
                    "directory on a filesystem that every node mounts at the same path"
                )
            yield str(record)
        if failure is not None:
            raise failure
    finally:
        ray.shutdown()


def _call(function: Callable[..., str], *args: Any) -> str:
    """``function(*args)``, in a Ray task."""
    return function(*args)
