"""What several test modules share and pytest's fixtures do not fit: small environments with a known answer, the
grids' tiny env settings, and the ways to run and compare ``tsrl`` runs."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch

from experiments.cli import main
from tsrl_env import TINY_SETTINGS, EnvConfig
from tsrl_env.state import DEFAULT_STATE_COLUMNS, StateBuilder

ROOT = Path(__file__).resolve().parent.parent

TINY_GRID_ENV = {**TINY_SETTINGS, "dataset_options": {**TINY_SETTINGS["dataset_options"], "train_size": 128}}
"""The tiny settings at half the training images: the env of the test grids, which train many Students."""
TINY_CLEAN_GRID_ENV = {**TINY_GRID_ENV, "dataset_options": {**TINY_GRID_ENV["dataset_options"], "label_noise": 0.0}}
"""The same without label noise: a grid then has no oracle or random reference row (one tutor, one seed: one cell)."""

# The default state columns of a Student with four features (the builder reads nothing else of a trainer).
LAYOUT = StateBuilder(DEFAULT_STATE_COLUMNS, EnvConfig(), SimpleNamespace(student=SimpleNamespace(num_features=4))).layout
STATE_DIM = LAYOUT.correct + 1


class SignBandit(gym.Env):
    """A batch environment with a known best curriculum: weight 1 where the first state value is positive, else 0."""

    steps_per_epoch = 8

    def __init__(self, batch_size: int = 16, state_dim: int = 4) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (batch_size, state_dim), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (batch_size,), np.float32)

    def _states(self) -> np.ndarray:
        self._obs = self.np_random.uniform(-1, 1, self.observation_space.shape).astype(np.float32)
        return self._obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._states(), {"warmup": []}

    def step(self, action):
        rewards = np.where(self._obs[:, 0] > 0, action, -action).astype(np.float32)
        return self._states(), float(rewards.mean()), False, False, {"sample_rewards": rewards}


class LayoutEnv(gym.Env):
    """What a heuristic tutor reads from a curriculum environment: the state layout and the epoch, nothing else."""

    steps_per_epoch = 1

    def __init__(self, epoch: int = 0, epochs: int = 4, batch_size: int = 6) -> None:
        self.state_layout = LAYOUT
        self.epoch = epoch
        self.config = EnvConfig(epochs=epochs)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (batch_size, STATE_DIM), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (batch_size,), np.float32)


def rows(ema_loss=None, p_fake=None, correct=None) -> np.ndarray:
    """State rows with the given EMA losses, fake probabilities and correctness; every other column zero."""
    n = len(next(v for v in (ema_loss, p_fake, correct) if v is not None))
    states = np.zeros((n, STATE_DIM), np.float32)
    if ema_loss is not None:
        states[:, LAYOUT.ema_loss] = np.tanh(ema_loss)
    if p_fake is not None:
        states[:, LAYOUT.p_fake] = p_fake
    right = np.ones(n, bool) if correct is None else np.asarray(correct, bool)
    states[:, LAYOUT.correct], states[:, LAYOUT.wrong] = right, ~right
    return states


def comparable(run: dict) -> dict:
    """A run's record without its wall time, the one field that legitimately differs between two equal runs."""
    return {key: value for key, value in run.items() if key != "wall_time_s"}


def students_equal(first: Path, second: Path) -> bool:
    """Whether two saved Students hold the same tensors, bit for bit."""
    a, b = (torch.load(path, weights_only=True) for path in (first, second))
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def subprocess_env() -> dict[str, str]:
    """The environment of a ``tsrl`` started as a process of its own: one torch thread, this checkout importable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def tsrl_in_this_process(*arguments: str) -> None:
    """``tsrl ARGUMENTS`` in this process at one torch thread, as the commands run in processes of their own
    (``OMP_NUM_THREADS=1``) compute, this process's thread count and deterministic-algorithms setting restored after:
    for the runs whose process boundary is not what a test checks."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        main([*arguments, "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
