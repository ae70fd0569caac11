"""Warm-ups shared by the Students of a grid that start alike.

Every tutor of a grid cell trains its Student from the same seed, on the same data, with the same uniform-weight
warm-up (docs/protocol.md: same seed = same data, initialisation, warm-up and batch order): the warm-up epochs are
the same computation for every tutor whose environment settings are the same. The first Student of a kind saves the
environment's state at the end of its warm-up (its epoch-start state, the one a run checkpoint holds) with the warm-up
epochs' validation metrics; the next ones restore it instead of training it again, and continue exactly as they would
have (the restore is the one a resumed run goes through, tested bit for bit).

A warm-up is shared only between Students whose key matches: every env setting (the tutor's own settings included),
the reset seed, the SHA-256 of the pretrained weights file, the torch version and thread count (which change the last
bits of the convolutions) and the code's commit. It is saved only when the warm-up left the global random generators
as it found them (the tutors draw from those), and never for a Student trained by a process group.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.records.provenance import code_version, sha256
from experiments.training.checkpoint import EpochCheckpointer, global_rng_states, write_checkpoint
from tsrl_env import DeepfakeCurriculumEnv
from tsrl_env.env import TrainingListener


class SharedWarmups:
    """The warm-ups saved in ``directory`` (one file per key), for Students built on environments like ``env``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def key(self, env: DeepfakeCurriculumEnv, seed: int) -> str:
        """What makes two Students' warm-ups the same computation (see the module docstring)."""
        settings = env.config.to_dict()
        weights = settings.get("pretrained_file")
        identity = {
            "env": settings,
            "seed": seed,
            "pretrained_file_sha256": sha256(weights) if weights else None,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "commit": code_version().get("commit"),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.pt"

    def load(self, key: str) -> dict[str, Any] | None:
        """The warm-up saved under ``key``: ``{"env": epoch-start state, "epochs": [val metrics...], "samples": int,
        "wall_time_s": float}``, or None when there is none, or none readable: a damaged file is trained again and
        overwritten, so that a rerun always continues."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # a truncated or corrupted file raises many kinds (pickle, zip, EOF): each means retrain it
            return None

    def save(self, key: str, warmup: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_checkpoint(self.path(key), warmup)


class WarmupWatch(TrainingListener):
    """Watches one Student's warm-up (the epochs its environment's reset trains) so that it can be saved afterwards:
    its validation metrics, its samples, its wall time, and whether it drew from the global random generators."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.samples = 0
        self._rng_before = global_rng_states()
        self._started = time.perf_counter()

    def batch_trained(self, samples: int) -> None:
        self.samples += samples

    def warmup_epoch_ended(self, epoch: int, val: dict[str, Any]) -> None:
        self.epochs.append(val)

    def finished(self, env: DeepfakeCurriculumEnv) -> dict[str, Any] | None:
        """The warm-up to save, once the environment's reset returned; None when it cannot be shared (it drew from
        the global generators, so a Student restoring it would draw differently afterwards)."""
        if not _same_rng_states(self._rng_before, global_rng_states()):
            return None
        wall_time_s = time.perf_counter() - self._started
        return {"env": env.epoch_start_state(), "epochs": self.epochs, "samples": self.samples, "wall_time_s": wall_time_s}


def replay(warmup: dict[str, Any], listeners: list[TrainingListener]) -> None:
    """Tell ``listeners`` of a restored warm-up's epochs, as they heard of a warm-up trained in the reset."""
    per_epoch = warmup["samples"] // max(1, len(warmup["epochs"]))
    for epoch, val in enumerate(warmup["epochs"]):
        for listener in listeners:
            listener.batch_trained(per_epoch)
            listener.warmup_epoch_ended(epoch, val)


def _same_rng_states(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a["python"] == b["python"]
        and all(np.array_equal(x, y) for x, y in zip(a["numpy"], b["numpy"], strict=True))
        and torch.equal(a["torch"], b["torch"])
        and len(a["cuda"]) == len(b["cuda"])
        and all(torch.equal(x, y) for x, y in zip(a["cuda"], b["cuda"], strict=True))
    )


class WarmupSharing:
    """One new Student's part in :class:`SharedWarmups`: :meth:`restorable` gives the saved warm-up to restore (its
    epochs replayed to the run's listeners, its wall time counted), or starts watching this Student's own warm-up, which
    :meth:`after_reset` saves once the environment's reset has trained it."""

    def __init__(self, directory: Path, env: DeepfakeCurriculumEnv, seed: int, checkpointer: EpochCheckpointer) -> None:
        self.shared = SharedWarmups(directory)
        self.key = self.shared.key(env, seed)
        self.env = env
        self.checkpointer = checkpointer
        self.watch: WarmupWatch | None = None

    def restorable(self) -> dict[str, Any] | None:
        saved = self.shared.load(self.key)
        if saved is None:
            self.watch = WarmupWatch()
            self.env.listeners.append(self.watch)
            return None
        replay(saved, self.env.listeners)
        self.checkpointer.started -= saved["wall_time_s"]
        return saved["env"]

    def after_reset(self) -> None:
        if self.watch is None:
            return
        self.env.listeners.remove(self.watch)
        finished = self.watch.finished(self.env)
        if finished is not None:
            self.shared.save(self.key, finished)
        self.watch = None
