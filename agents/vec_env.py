"""SB3 ``VecEnv`` adapter of the per-sample view, so that any Stable-Baselines3 algorithm trains a tutor unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from tsrl_env import PerSampleVectorEnv


class PerSampleVecEnv(VecEnv):
    """Stable-Baselines3 view of :class:`tsrl_env.PerSampleVectorEnv`: ``batch_size`` envs, each transition terminal.

    Each sub-env's info carries ``terminal_observation`` (the state that was acted on, as SB3 expects of a
    finished episode) and ``batch``, the batch environment's info (epoch, loss, validation metrics, ...).
    """

    def __init__(self, env: gym.Env | PerSampleVectorEnv) -> None:
        self.vector_env = env if isinstance(env, PerSampleVectorEnv) else PerSampleVectorEnv(env)
        super().__init__(
            self.vector_env.num_envs,
            self.vector_env.single_observation_space,
            self.vector_env.single_action_space,
        )
        self._actions: np.ndarray | None = None

    @property
    def batch_env(self) -> gym.Env:
        """The batch-level curriculum environment behind this view."""
        return self.vector_env.env

    def reset(self) -> np.ndarray:
        seed = self._seeds[0] if self._seeds else None
        options = self._options[0] if self._options else None
        states, infos = self.vector_env.reset(seed=seed, options=options or None)
        self.reset_infos = [infos["batch"] for _ in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return states

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        states, rewards, terminations, truncations, infos = self.vector_env.step(self._actions)
        dones = terminations | truncations
        acted = infos["final_obs"]
        batch_info = infos["batch"]
        per_env = [
            {
                "terminal_observation": acted[i],
                "TimeLimit.truncated": bool(truncations[i] and not terminations[i]),
                "batch": batch_info,
            }
            for i in range(self.num_envs)
        ]
        if "reset" in infos:
            per_env[0]["reset"] = infos["reset"]
        return states, rewards, dones, per_env

    def close(self) -> None:
        self.vector_env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.batch_env.unwrapped, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.batch_env.unwrapped, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        result = getattr(self.batch_env.unwrapped, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        wrapped = _is_wrapped(self.batch_env, wrapper_class)
        return [wrapped for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]


def _is_wrapped(env: gym.Env, wrapper_class: type[gym.Wrapper]) -> bool:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, wrapper_class):
            return True
        env = env.env
    return False


def as_per_sample_vec_env(env: gym.Env | VecEnv | None) -> VecEnv | None:
    """An SB3 ``VecEnv`` for a tutor: SB3 vector envs pass through, batch curriculum envs get the per-sample view."""
    if env is None or isinstance(env, VecEnv):
        return env
    return PerSampleVecEnv(env)
