"""Pretrained weights built on first use: a run, grid or teaching config that names ``pretrain`` and whose
``env.pretrained_file`` is missing first trains that run config's uniform Student and saves its weights there.

The folder of the weights then holds what the protocol check reads (the pretraining config, ``config.yaml``, beside
them: :func:`experiments.protocol.check_dataset`) and the pretraining run itself (``pretraining/``: its record and test
metrics). The build computes with one torch thread, the way the weights the project's grids record were made, so that a
machine of the same kind writes the same file (same SHA-256) and the run's fingerprint matches the grids'; another CPU
or a GPU may write other bytes, and a grid then refuses its committed cells as changed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from experiments.config import RunConfig, load_run_config
from experiments.records.provenance import sha256
from experiments.training.student import train_student
from tsrl_env.files import directory_lock

PRETRAINING_THREADS = 1
"""Torch threads of the build: the thread count changes the last bits of the weights (and so their hash)."""


def pretrained_file_missing(pretrain: str | None, pretrained_file: str | None) -> bool:
    """Whether a run of these settings builds its pretrained weights first."""
    return pretrain is not None and pretrained_file is not None and not Path(pretrained_file).is_file()


def pretraining_recipe(pretrain: str) -> RunConfig:
    """The run config ``pretrain`` (a name or a path), refused unless it trains a uniform Student from random weights."""
    recipe = load_run_config(pretrain)
    if recipe.tutor != "uniform" or recipe.env.pretrained_file is not None or recipe.env.pretrained is not False:
        raise ValueError(
            f"pretrain config {pretrain!r} is not a pretraining run (tutor {recipe.tutor!r}, pretrained "
            f"{recipe.env.pretrained!r}, pretrained_file {recipe.env.pretrained_file!r}); a pretraining run trains with "
            "tutor: uniform from random weights (pretrained: false, no pretrained_file)"
        )
    return recipe


def build_missing_pretrained_file(pretrain: str | None, pretrained_file: str | None, progress: bool = True) -> Path | None:
    """Train the uniform Student of the run config ``pretrain`` (a name or a path) and save its weights as
    ``pretrained_file``, unless that file exists or ``pretrain`` is None; returns the file built, or None. An interrupted
    build continues from its checkpoint the next time; a second process building the same file meanwhile is refused
    (the lock of the pretraining run's folder)."""
    if not pretrained_file_missing(pretrain, pretrained_file):
        return None
    destination = Path(str(pretrained_file))
    recipe = pretraining_recipe(pretrain)
    run_dir = destination.parent / "pretraining"
    run_dir.mkdir(parents=True, exist_ok=True)
    with directory_lock(run_dir, f"the build of {destination}"):
        if destination.is_file():
            return None  # another process built it between the check above and this lock
        print(f"building the pretrained Student {destination} from {pretrain} (once; one torch thread)")
        threads = torch.get_num_threads()
        torch.set_num_threads(PRETRAINING_THREADS)
        try:
            resume_command = "the same command again (the pretraining continues from its checkpoint)"
            train_student(recipe, run_dir, "uniform", progress=progress, resume=True, resume_command=resume_command)
        finally:
            torch.set_num_threads(threads)
        recipe.save(run_dir / "config.yaml")
        state = torch.load(run_dir / "uniform" / "student.pt", weights_only=True)
        recipe.save(destination.parent / "config.yaml")
        # torch.save names the archive inside the file after the file's own name, so the weights are saved under their
        # final name (in a folder of their own) and then moved: the same bytes as saving to the destination directly.
        with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".staging-") as staging:
            torch.save(state, Path(staging) / destination.name)
            os.replace(Path(staging) / destination.name, destination)
    print(f"built {destination} (SHA-256 {sha256(destination)})")
    return destination
