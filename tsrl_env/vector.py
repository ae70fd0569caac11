"""Per-sample view of the curriculum environment for Gymnasium agents, as a Gymnasium ``VectorEnv`` (docs/design.md, "The
environment contract"). Stable-Baselines3 tutors step :class:`agents.PerSampleSB3VecEnv` instead: the same per-sample
view through SB3's ``VecEnv`` API."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space


class PerSampleGymnasiumVectorEnv(VectorEnv):
    """The per-sample view for Gymnasium agents (Gymnasium's ``VectorEnv`` API; SB3 tutors use
    :class:`agents.PerSampleSB3VecEnv`). One sub-environment per batch slot: sub-env ``i`` observes sample ``i``'s
    state, acts with its weight and receives its own reward, and every transition is terminal (a one-step contextual
    bandit per sample).

    All sub-environments share one Student, so they step together. The next observation is already the
    next batch (autoreset mode ``SAME_STEP``); ``infos["final_obs"]`` holds the states that were acted on and
    ``infos["batch"]`` the batch environment's own info. When the Student's episode ends, the wrapped
    environment is reset (a new Student) within the same step, unless ``autoreset`` is False: then the
    acted-on states come back as the next observation and ``reset()`` must be called before stepping again,
    which spares the warm-up of a Student nobody will train when a run is exactly one episode long.
    """

    def __init__(self, env: gym.Env, autoreset: bool = True) -> None:
        if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 2:
            raise TypeError(f"expected a batch environment with (batch, state) observations, got {env.observation_space}")
        self.env = env
        self.autoreset = autoreset
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP if autoreset else AutoresetMode.DISABLED}
        self.num_envs, state_dim = env.observation_space.shape
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
        self.single_action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._states = np.zeros(env.observation_space.shape, np.float32)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the shared Student; a list of seeds (one per sub-env) uses its first entry."""
        if isinstance(seed, (list, tuple)):
            seed = seed[0]
        self._states, info = self.env.reset(seed=seed, options=options)
        return self._states, {"batch": info}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        if actions.shape not in ((self.num_envs,), (self.num_envs, 1)):
            raise ValueError(f"actions must have shape ({self.num_envs}, 1) or ({self.num_envs},), got {actions.shape}")
        acted_states = self._states
        states, _, terminated, truncated, info = self.env.step(actions.reshape(self.num_envs))
        infos: dict[str, Any] = {
            "batch": info,
            "final_obs": acted_states,
            "_final_obs": np.ones(self.num_envs, dtype=bool),
        }
        if (terminated or truncated) and self.autoreset:
            states, reset_info = self.env.reset()
            infos["reset"] = reset_info
        self._states = states
        rewards = np.asarray(info["sample_rewards"], dtype=np.float32)
        terminations = np.ones(self.num_envs, dtype=bool)
        truncations = np.zeros(self.num_envs, dtype=bool)
        return states, rewards, terminations, truncations, infos

    def close(self, **kwargs: Any) -> None:
        self.env.close()
