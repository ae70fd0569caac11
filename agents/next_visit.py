"""Credit assignment for rewards that pay late, such as ``next_visit``, whose rewards arrive one Student epoch after
their actions.

Under such a reward a step pays the current batch's samples for the weights given to them at their previous visit,
one epoch earlier; the step's ``info["reward_for"]`` (a :class:`tsrl_env.LateCredit`) names the action each reward
belongs to. SB3's algorithms credit a step's rewards to that step's actions, which is wrong here.
:class:`NextVisitReplayBuffer` credits them for the off-policy tutors (SAC, TD3, DDPG), and
:class:`agents.ppo.TutorPPO` trains one rollout late (see there).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from tsrl_env import LateCredit


def pays_late(env: VecEnv) -> bool:
    """Whether ``env``'s reward pays each action at a later step (its ``reward`` says so, e.g. ``next_visit``).

    Environments without a curriculum reward (toy environments, other tasks) pay each step's own actions.
    """
    try:
        reward = env.get_attr("reward")[0]
    except AttributeError:
        return False
    return bool(getattr(reward, "pays_late", False))


def paid_credit(info: dict[str, Any]) -> tuple[int, int, LateCredit]:
    """The Student step (epoch, step) of an environment step's info, and the rows of its reward that pay earlier actions."""
    if "reward_for" not in info:
        raise ValueError(
            "the environment's step info has no 'reward_for', so its rewards cannot be credited to the earlier actions "
            "they belong to: late credit needs DeepfakeCurriculumEnv with a reward that pays late (reward='next_visit'); "
            "for other rewards build the tutor without it (PPO: next_visit=False)"
        )
    return int(info["epoch"]), int(info["step"]), info["reward_for"].paid()


class NextVisitReplayBuffer(ReplayBuffer):
    """Replay buffer of an off-policy tutor under a reward that pays late: it samples a transition only once paid.

    Transitions are stored as usual but unpaid, with reward 0: the rewards SB3 hands over with a step belong to actions
    of an earlier epoch. Each of those is written at the stored position of the action it pays (the Student step picks
    the position, the batch slot is the buffer's env axis, as in the per-sample view) and marks it paid; ``sample``
    draws from paid transitions only. A reward whose action has left the buffer is dropped and counted in
    ``stale_rewards``. The last epoch's actions are never paid, so never sampled.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.optimize_memory_usage:
            raise ValueError("NextVisitReplayBuffer does not support optimize_memory_usage=True; leave it False")
        self.paid = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self.stale_rewards = 0
        # The Student step (epoch, step) stored at each position, and where each stored step is, for the payments.
        self._step_at: list[tuple[int, int] | None] = [None] * self.buffer_size
        self._position_of: dict[tuple[int, int], int] = {}

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        epoch, step, credit = paid_credit(infos[0])
        position = self.pos
        super().add(obs, next_obs, action, np.zeros_like(reward), done, infos)
        overwritten = self._step_at[position]
        # After an episode restarts, a (epoch, step) key may already point at a newer position: keep that one.
        if overwritten is not None and self._position_of.get(overwritten) == position:
            del self._position_of[overwritten]
        key = (epoch, step)
        self._step_at[position] = key
        self._position_of[key] = position
        self.paid[position] = False
        self._pay(credit)

    def _pay(self, credit: LateCredit) -> None:
        # A batch's rows point back to a few Student steps: look each step up once, not once per row.
        steps, row_step = np.unique(np.stack([credit.epoch, credit.step], axis=1), axis=0, return_inverse=True)
        step_positions = np.array([self._position_of.get((int(e), int(s)), -1) for e, s in steps], dtype=np.int64)
        positions = step_positions[row_step.reshape(-1)]
        kept = positions >= 0
        self.rewards[positions[kept], credit.slot[kept]] = credit.reward[kept]
        self.paid[positions[kept], credit.slot[kept]] = True
        self.stale_rewards += int((~kept).sum())

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """``batch_size`` paid transitions drawn uniformly with replacement, as SB3 draws from all of them."""
        paid = np.flatnonzero(self.paid)
        if paid.size == 0:
            raise RuntimeError(
                "no paid transition to learn from yet: under the next_visit reward an action is paid one Student epoch "
                "later, so learning must start after the first tutored epoch; give learning_starts of at least "
                "steps_per_epoch * batch_size (the default of agents.zoo's tutors) and an episode of two epochs or more"
            )
        positions, slots = np.divmod(paid[np.random.randint(paid.size, size=batch_size)], self.n_envs)
        return self.samples_at(positions, slots, env)

    def samples_at(self, positions: np.ndarray, slots: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """The transitions stored at ``(positions, slots)``; SB3's ``_get_samples`` would draw the slots at random."""
        data = (
            self._normalize_obs(self.observations[positions, slots, :], env),
            self.actions[positions, slots, :],
            self._normalize_obs(self.next_observations[positions, slots, :], env),
            # As in SB3: a done due to a time limit is not a terminal state.
            (self.dones[positions, slots] * (1 - self.timeouts[positions, slots])).reshape(-1, 1),
            self._normalize_reward(self.rewards[positions, slots].reshape(-1, 1), env),
        )
        return ReplayBufferSamples(*tuple(map(self.to_torch, data)))
