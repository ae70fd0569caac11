"""How many torch threads a command computes with.

Two processes with two torch threads each on two cores slow each other several-fold (idle threads spin waiting for
their share of the next operation), so a process that is one of several, or that starts on a busy machine, computes
with fewer threads. The count changes the order of floating-point sums in the Student's convolutions, hence the last
bits of its results: it is printed in each run's header and recorded in its record (``environment.torch_threads``),
and ``--threads N`` fixes it for a run that must repeat bit for bit.
"""

from __future__ import annotations

import os

import torch

BUSY_MARGIN = 0.5
"""The machine counts as busy when its one-minute load average is within this of its core count."""


def chosen_threads(requested: int | None) -> tuple[int, str]:
    """The torch threads for this process and why: ``requested`` (``--threads``), else ``OMP_NUM_THREADS``, else the
    cores shared out among the processes of a distributed launch, else one thread on a busy machine, else torch's
    default (one per physical core)."""
    cores = os.cpu_count() or 1
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be at least 1, got {requested}")
        return requested, "--threads"
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads(), "OMP_NUM_THREADS"
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if processes > 1:
        return max(1, cores // processes), f"{processes} processes share {cores} cores"
    load = os.getloadavg()[0]
    if load >= cores - BUSY_MARGIN:
        return 1, f"the machine is busy: load {load:.1f} on {cores} cores"
    return torch.get_num_threads(), f"the machine is quiet: load {load:.1f} on {cores} cores"
