"""Pretrained weights built on first use: a run or grid whose config names ``pretrain`` and whose ``env.pretrained_file``
is missing first trains that config's uniform Student and saves its weights there.

The folder of the weights then holds what the protocol check reads (the pretraining config, ``config.yaml``, beside
them: :func:`experiments.protocol.check_dataset`) and the pretraining run itself (``pretraining/``: its record and test
metrics). The build computes with one torch thread, the way the weights the project's grids record were made, so that a
machine of the same kind writes the same file (same SHA-256) and the run's fingerprint matches the grids'.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from experiments.config import load_run_config
from experiments.training.student import train_student
from tsrl_env.files import directory_lock

PRETRAINING_THREADS = 1
"""Torch threads of the build: the thread count changes the last bits of the weights (and so their hash)."""


def build_missing_pretrained_file(pretrain: str | None, pretrained_file: str | None, progress: bool = True) -> Path | None:
    """Train the uniform Student of the run config ``pretrain`` (a name or a path) and save its weights as
    ``pretrained_file``, unless that file exists or ``pretrain`` is None; returns the file built, or None. An interrupted
    build continues from its checkpoint the next time."""
    if pretrain is None or pretrained_file is None:
        return None
    destination = Path(pretrained_file)
    if destination.is_file():
        return None
    recipe = load_run_config(pretrain)
    if recipe.env.pretrained_file is not None or recipe.env.pretrained is not False:
        raise ValueError(
            f"pretrain config {pretrain!r} starts from pretrained weights itself; a pretraining run starts from "
            "random weights (pretrained: false, no pretrained_file)"
        )
    run_dir = destination.parent / "pretraining"
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"building the pretrained Student {destination} from {pretrain} (once; one torch thread)")
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAINING_THREADS)
    try:
        with directory_lock(run_dir, "tsrl train (pretraining)"):
            recipe.save(run_dir / "config.yaml")
            resume_command = "the same command again (the pretraining continues from its checkpoint)"
            train_student(recipe, run_dir, "uniform", progress=progress, resume=True, resume_command=resume_command)
    finally:
        torch.set_num_threads(threads)
    state = torch.load(run_dir / "uniform" / "student.pt", weights_only=True)
    # torch.save names the archive inside the file after the file's own name, so the weights are saved under their
    # final name (in a folder of their own) and then moved: the same bytes as saving to the destination directly.
    staging = destination.parent / ".staging"
    staging.mkdir(exist_ok=True)
    torch.save(state, staging / destination.name)
    recipe.save(destination.parent / "config.yaml")
    os.replace(staging / destination.name, destination)
    staging.rmdir()
    return destination
