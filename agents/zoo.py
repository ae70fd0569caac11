"""Stable-Baselines3 algorithms as tutors, with defaults for the per-sample setting.

Every tutor here acts through the per-sample view (:func:`agents.vec_env.as_per_sample_vec_env`): one Student
step is ``batch_size`` parallel one-step episodes, each a state row, a weight in [0, 1] and that sample's
reward. Every transition is terminal, so ``gamma`` plays no part, and the settings that matter are how much
experience one update sees and how the tutor explores:

- off-policy tutors (SAC, TD3, DDPG) keep four Student epochs of transitions in their replay buffer and take
  one gradient step per Student step;
- SAC starts learning after one Student step of uniformly random weights; TD3 and DDPG after one Student
  epoch of them: their deterministic tanh actor follows the critic's slope from the first update and, on a toy
  bandit, saturated at weight 1 for every state on 1 to 3 of 6 seeds when the critic had seen only one step of
  random weights, and on none after one epoch (pass ``learning_starts`` to trade that for a shorter random phase);
- TD3 and DDPG have a deterministic actor, and SB3 adds no exploration noise unless told to, so they get
  Gaussian action noise whose standard deviation is ``action_std`` in weight units (0.2 by default, the fixed
  standard deviation of the reference PPO tutor);
- under a reward that pays late (``next_visit`` pays an action one Student epoch after it was taken), SAC, TD3 and DDPG store
  transitions in a :class:`agents.next_visit.NextVisitReplayBuffer`, which credits each reward to the transition it
  pays and samples paid transitions only, and learn (SAC included) after one Student epoch of random weights, when
  the first rewards arrive;
- A2C updates after every Student step (``n_steps=1``): its rollout is then one batch of one-step episodes,
  as many samples as a usual A2C update, whereas a rollout of one Student epoch would allow only a handful of
  updates per episode. It uses the reference tutor's sigmoid-mean policy with a fixed standard deviation and
  standardises each batch's advantages, as the PPO tutor standardises each rollout's rewards.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import A2C, DDPG, SAC, TD3
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.next_visit import NextVisitReplayBuffer, pays_late
from agents.ppo import SigmoidGaussianPolicy
from agents.vec_env import as_per_sample_vec_env

REPLAY_EPOCHS = 4
"""Student epochs of transitions an off-policy tutor's replay buffer holds."""


def _off_policy(
    algorithm: type[OffPolicyAlgorithm],
    env: gym.Env | VecEnv,
    random_epoch: bool,
    action_std: float | None,
    **kwargs: Any,
) -> OffPolicyAlgorithm:
    """``algorithm`` on the per-sample view, learning after one Student epoch (else step) of random weights.

    Under a reward that pays late (``next_visit``) it always waits one epoch, the first whose rewards arrive, and
    replays only paid transitions (unless ``replay_buffer_class`` is given).
    """
    venv = as_per_sample_vec_env(env)
    steps_per_epoch = venv.get_attr("steps_per_epoch")[0]
    epoch = steps_per_epoch * venv.num_envs
    kwargs.setdefault("buffer_size", REPLAY_EPOCHS * epoch)
    if pays_late(venv):
        kwargs.setdefault("replay_buffer_class", NextVisitReplayBuffer)
        kwargs.setdefault("learning_starts", epoch)
        if kwargs["learning_starts"] < epoch:
            raise ValueError(
                f"learning_starts={kwargs['learning_starts']} is less than one Student epoch ({epoch} transitions), but the "
                "next_visit reward pays nothing before the second epoch, so there would be nothing to learn from; leave "
                "learning_starts unset"
            )
    kwargs.setdefault("learning_starts", (steps_per_epoch if random_epoch else 1) * venv.num_envs)
    if action_std is not None and "action_noise" not in kwargs:
        _check_std(action_std)
        # SB3 adds the noise to actions rescaled from [0, 1] to [-1, 1], where a weight unit is two.
        kwargs["action_noise"] = NormalActionNoise(np.zeros(1), np.full(1, 2.0 * action_std))
    return algorithm("MlpPolicy", venv, **kwargs)


def make_sac(env: gym.Env | VecEnv, **kwargs: Any) -> SAC:
    """SB3 SAC on the per-sample view; the replay buffer holds four Student epochs of transitions by default."""
    return _off_policy(SAC, env, random_epoch=False, action_std=None, **kwargs)


def make_td3(env: gym.Env | VecEnv, action_std: float = 0.2, **kwargs: Any) -> TD3:
    """SB3 TD3 on the per-sample view: one Student epoch of random weights, then Gaussian noise of ``action_std``.

    Passing ``action_noise`` replaces that noise; other keywords go to :class:`stable_baselines3.TD3`.
    """
    return _off_policy(TD3, env, random_epoch=True, action_std=action_std, **kwargs)


def make_ddpg(env: gym.Env | VecEnv, action_std: float = 0.2, **kwargs: Any) -> DDPG:
    """SB3 DDPG on the per-sample view: one Student epoch of random weights, then Gaussian noise of ``action_std``.

    Passing ``action_noise`` replaces that noise; other keywords go to :class:`stable_baselines3.DDPG`.
    """
    return _off_policy(DDPG, env, random_epoch=True, action_std=action_std, **kwargs)


def make_a2c(env: gym.Env | VecEnv, action_std: float = 0.2, **kwargs: Any) -> A2C:
    """SB3 A2C on the per-sample view: one update per Student step, sigmoid-mean policy, standardised advantages.

    The policy is :class:`agents.ppo.SigmoidGaussianPolicy` with a fixed ``action_std``; actor and critic share
    A2C's single learning rate. Other keywords go to :class:`stable_baselines3.A2C`.
    """
    _check_std(action_std)
    kwargs.setdefault("n_steps", 1)
    kwargs.setdefault("normalize_advantage", True)
    policy_kwargs = {"action_std": action_std, "critic_lr_scale": 1.0, **(kwargs.pop("policy_kwargs", None) or {})}
    return A2C(SigmoidGaussianPolicy, as_per_sample_vec_env(env), policy_kwargs=policy_kwargs, **kwargs)


def _check_std(action_std: float) -> None:
    if action_std <= 0:
        raise ValueError(f"action_std must be positive (a standard deviation in weight units), got {action_std}")
