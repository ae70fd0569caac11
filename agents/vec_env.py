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


class BatchVecEnv(VecEnv):
    """Stable-Baselines3 view of a batch curriculum environment as one env, for tutors that act on whole batches.

    Observations are the batch's ``(batch, state)`` states and actions its ``(batch,)`` weights; the reward is
    the environment's (the mean per-sample reward) and ``infos[0]`` is the environment's own info. Unlike SB3's
    ``DummyVecEnv``, the end of the Student's episode does not reset the environment: the last observation comes
    back, the info carries ``terminal_observation``, and stepping again raises until ``reset()`` is called. A
    reset builds and warms up a new Student, which is wasted work when a run is exactly one episode long.
    """

    def __init__(self, env: gym.Env) -> None:
        check_batch_spaces(env.observation_space, env.action_space)
        self.env = env
        super().__init__(1, env.observation_space, env.action_space)
        self._actions: np.ndarray | None = None
        # SB3 resets before its first rollout; nothing may step a Student that was never built.
        self._needs_reset = True

    def reset(self) -> np.ndarray:
        observation, info = self.env.reset(seed=self._seeds[0], options=self._options[0] or None)
        self.reset_infos = [info]
        self._reset_seeds()
        self._reset_options()
        self._needs_reset = False
        return observation[None]

    def step_async(self, actions: np.ndarray) -> None:
        if self._needs_reset:
            raise RuntimeError(
                "the episode has terminated (or never started) and this view does not reset on its own; call reset() "
                "first (SB3's learn() does when reset_num_timesteps=True, or give total_timesteps within one episode)"
            )
        actions = np.asarray(actions)
        shape = self.action_space.shape
        if actions.shape not in ((1, *shape), shape):
            raise ValueError(f"actions must have shape (1, {shape[0]}) or {shape} (one weight per sample), got {actions.shape}")
        self._actions = actions.reshape(shape)

    def step_wait(self) -> VecEnvStepReturn:
        observation, reward, terminated, truncated, info = self.env.step(self._actions)
        done = bool(terminated or truncated)
        if done:
            info = {**info, "terminal_observation": observation, "TimeLimit.truncated": bool(truncated and not terminated)}
            self._needs_reset = True
        return observation[None], np.array([reward], np.float32), np.array([done]), [info]

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = self.env.get_wrapper_attr(attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self.env.set_wrapper_attr(attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        result = self.env.get_wrapper_attr(method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [_is_wrapped(self.env, wrapper_class) for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None]


def as_batch_vec_env(env: gym.Env | VecEnv | None) -> VecEnv | None:
    """An SB3 ``VecEnv`` for a batch-level tutor: SB3 vector envs pass through, batch environments get :class:`BatchVecEnv`."""
    if env is None or isinstance(env, VecEnv):
        return env
    return BatchVecEnv(env)


def check_batch_spaces(observation_space: gym.spaces.Space, action_space: gym.spaces.Space) -> None:
    """Raise a TypeError unless the spaces are a batch environment's: ``(B, D)`` observations, ``(B,)`` weights."""
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 2:
        raise TypeError(
            f"expected a batch environment whose observation is a 2-D (batch, state) Box, got {observation_space}; "
            "give the batch environment itself, not its per-sample view"
        )
    if not isinstance(action_space, gym.spaces.Box) or action_space.shape != observation_space.shape[:1]:
        raise TypeError(
            f"expected one weight per observation row, i.e. an action Box of shape {observation_space.shape[:1]}, "
            f"got {action_space}"
        )
