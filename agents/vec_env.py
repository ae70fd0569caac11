"""Stable-Baselines3 ``VecEnv`` views of a batch curriculum environment, so that any SB3 algorithm trains a tutor unchanged
(Gymnasium agents use :class:`tsrl_env.PerSampleGymnasiumVectorEnv`, the per-sample view through Gymnasium's own
``VectorEnv`` API).

Two views share one base (:class:`CurriculumSB3VecEnv`): :class:`PerSampleSB3VecEnv` for tutors that weight each sample from
its own state row (``batch_size`` envs, each transition a one-step episode) and :class:`BatchSB3VecEnv` for tutors that act
on whole batches (one env). Both hand SB3 the environment's own info, un-nested: every sub-env's info is the step's info
(``epoch``, ``sample_rewards``, ``reward_for``, ...), plus ``acted_on``, the observation the step's action weighted, and
SB3's ``terminal_observation`` where an episode ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn


class _Step(NamedTuple):
    """One step of the batch environment, as the views hand it to SB3: the observation its action weighted, what
    ``step`` returned, and the info of the reset that followed (``None`` without one)."""

    acted_on: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    reset_info: dict[str, Any] | None


class CurriculumSB3VecEnv(VecEnv):
    """What the SB3 views of a batch curriculum environment share: the environment behind them (attribute and method
    calls go to it), its reset with SB3's seed and options, action checks, and refusing to step an ended episode.

    ``autoreset`` False leaves the environment as it is when the Student's episode ends (the last observation comes
    back and stepping again raises until ``reset()``): a reset builds and warms up a new Student, wasted work when a
    run is exactly one episode long. Subclasses say how observations, actions, rewards and infos are shaped.
    """

    def __init__(
        self, env: gym.Env, num_envs: int, observation_space: gym.spaces.Space, action_space: gym.spaces.Space, autoreset: bool
    ) -> None:
        check_batch_spaces(env.observation_space, env.action_space)
        self.env = env
        self.autoreset = autoreset
        super().__init__(num_envs, observation_space, action_space)
        self._actions: np.ndarray | None = None
        self._observation = np.zeros(env.observation_space.shape, np.float32)
        # SB3 resets before its first rollout; nothing may step a Student that was never built.
        self._needs_reset = True

    def reset(self) -> np.ndarray:
        self._observation, info = self.env.reset(seed=self._seeds[0], options=self._options[0] or None)
        self.reset_infos = [info for _ in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        self._needs_reset = False
        return self._shaped(self._observation)

    def step_async(self, actions: np.ndarray) -> None:
        if self._needs_reset:
            raise RuntimeError(
                "the episode has terminated (or never started) and this view does not reset on its own; call reset() "
                "first (SB3's learn() does when reset_num_timesteps=True, or give total_timesteps within one episode)"
            )
        actions = np.asarray(actions)
        shape = self.env.action_space.shape
        accepted = ((self.num_envs, *self.action_space.shape), shape)
        if actions.shape not in accepted:
            raise ValueError(
                f"actions must have shape {accepted[0]} or {accepted[1]} (one weight per sample of the batch), "
                f"got {actions.shape}"
            )
        self._actions = actions.reshape(shape)

    def step_wait(self) -> VecEnvStepReturn:
        acted_on = self._observation
        self._observation, reward, terminated, truncated, info = self.env.step(self._actions)
        info = {**info, "acted_on": acted_on}
        done = bool(terminated or truncated)
        reset_info = None
        if done and self.autoreset:
            self._observation, reset_info = self.env.reset()
        elif done:
            self._needs_reset = True
        return self._step_return(_Step(acted_on, reward, bool(terminated), bool(truncated), info, reset_info))

    def _shaped(self, observation: np.ndarray) -> np.ndarray:
        """The environment's ``(batch, state)`` observation as this view's observations."""
        raise NotImplementedError

    def _step_return(self, step: _Step) -> VecEnvStepReturn:
        """SB3's ``(observations, rewards, dones, infos)`` of one environment step."""
        raise NotImplementedError

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
        wrapped = _is_wrapped(self.env, wrapper_class)
        return [wrapped for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]


class PerSampleSB3VecEnv(CurriculumSB3VecEnv):
    """The per-sample view for SB3 tutors (SB3's ``VecEnv`` API; Gymnasium agents use
    :class:`tsrl_env.PerSampleGymnasiumVectorEnv`). ``batch_size`` envs, one per batch slot: sub-env ``i`` observes
    sample ``i``'s state row, acts with its weight (shape ``(1,)``) and receives its own reward, and every transition is
    terminal (a one-step contextual bandit per sample), its ``terminal_observation`` the state that was acted on.

    All sub-envs share one Student, so they step together. With ``autoreset`` (the default) the environment is reset
    (a new Student) within the step that ends its episode, and that reset's info is ``infos[0]["reset"]``.
    """

    def __init__(self, env: gym.Env, autoreset: bool = True) -> None:
        # Read without unpacking: the base class refuses spaces that are not a batch environment's, with a clear message.
        batch_size, state_dim = env.action_space.shape[0], env.observation_space.shape[-1]
        observation_space = gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
        action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        super().__init__(env, batch_size, observation_space, action_space, autoreset)

    def _shaped(self, observation: np.ndarray) -> np.ndarray:
        return observation

    def _step_return(self, step: _Step) -> VecEnvStepReturn:
        # Every transition is terminal: a time limit never truncates one.
        infos = [{**step.info, "terminal_observation": row, "TimeLimit.truncated": False} for row in step.acted_on]
        if step.reset_info is not None:
            infos[0]["reset"] = step.reset_info
        rewards = np.asarray(step.info["sample_rewards"], dtype=np.float32)
        return self._observation, rewards, np.ones(self.num_envs, dtype=bool), infos


class BatchSB3VecEnv(CurriculumSB3VecEnv):
    """One env whose observations are the batch's ``(batch, state)`` states and actions its ``(batch,)`` weights; the
    reward is the environment's (the mean per-sample reward) and ``infos[0]`` the environment's info.

    Unlike SB3's ``DummyVecEnv``, the end of the Student's episode does not reset the environment (see
    :class:`CurriculumSB3VecEnv`): the info carries ``terminal_observation``.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env, 1, env.observation_space, env.action_space, autoreset=False)

    def _shaped(self, observation: np.ndarray) -> np.ndarray:
        return observation[None]

    def _step_return(self, step: _Step) -> VecEnvStepReturn:
        done = step.terminated or step.truncated
        info = step.info
        if done:
            info = {
                **info,
                "terminal_observation": self._observation,
                "TimeLimit.truncated": step.truncated and not step.terminated,
            }
        return self._observation[None], np.array([step.reward], np.float32), np.array([done]), [info]


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
    return PerSampleSB3VecEnv(env)


def as_batch_vec_env(env: gym.Env | VecEnv | None) -> VecEnv | None:
    """An SB3 ``VecEnv`` for a batch-level tutor: SB3 vector envs pass through, batch environments get :class:`BatchSB3VecEnv`."""
    if env is None or isinstance(env, VecEnv):
        return env
    return BatchSB3VecEnv(env)


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
