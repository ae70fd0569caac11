"""Tutors: agents that choose the Student's per-sample loss weights.

``make_tutor(name, env, **kwargs)`` builds one by name; learned tutors are Stable-Baselines3 algorithms
acting through the per-sample SB3 view of the environment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.ppo import SigmoidGaussianPolicy, TutorPPO, loss_rank_targets
from agents.vec_env import PerSampleVecEnv, as_per_sample_vec_env


def make_sac(env: gym.Env | VecEnv, **kwargs: Any) -> SAC:
    """SB3 SAC on the per-sample view; the replay buffer holds four Student epochs of transitions by default."""
    venv = as_per_sample_vec_env(env)
    steps_per_epoch = venv.get_attr("steps_per_epoch")[0]
    kwargs.setdefault("buffer_size", 4 * steps_per_epoch * venv.num_envs)
    kwargs.setdefault("learning_starts", venv.num_envs)
    return SAC("MlpPolicy", venv, **kwargs)


TUTORS: dict[str, Callable[..., BaseAlgorithm]] = {
    "ppo": TutorPPO,
    "sac": make_sac,
}


def make_tutor(name: str, env: gym.Env | VecEnv, **kwargs: Any) -> BaseAlgorithm:
    """The tutor registered as ``name``, acting on ``env``; keywords go to its constructor."""
    try:
        factory = TUTORS[name]
    except KeyError:
        raise ValueError(f"unknown tutor {name!r}; accepted: {', '.join(TUTORS)}") from None
    return factory(env, **kwargs)


__all__ = ["TUTORS", "PerSampleVecEnv", "SigmoidGaussianPolicy", "TutorPPO", "loss_rank_targets", "make_sac", "make_tutor"]
