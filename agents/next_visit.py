"""Credit assignment for rewards that pay late, such as ``next_visit``, whose rewards arrive one Student epoch after
their actions.

Under such a reward a step pays the current batch's samples for the weights given to them at their previous visit,
one epoch earlier; the step's ``info["reward_for"]`` (a :class:`tsrl_env.LateCredit`) names the action each reward
belongs to. SB3's algorithms credit a step's rewards to that step's actions, which is wrong here.
:class:`NextVisitReplayBuffer` credits them for the off-policy tutors (SAC, TD3, DDPG); :class:`agents.ppo.TutorPPO`
trains one rollout late, its previous rollout waiting as a :class:`PendingRollout` that :class:`PayPendingRollout`
pays as the current rollout's steps revisit its samples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from tsrl_env import LateCredit

if TYPE_CHECKING:
    from agents.ppo import TutorPPO


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


class PendingRollout:
    """One collected rollout (one Student epoch) of :class:`agents.ppo.TutorPPO`, waiting for its ``next_visit`` rewards.

    The rewards arrive during the next rollout, as its steps revisit the samples: :meth:`pay` writes each at the
    (step, slot) of the action it belongs to, and :meth:`paid_buffer` gives the paid transitions as a rollout buffer
    PPO can train on. ``rewards`` holds the paid rewards as the environment gave them (0 where unpaid), ``paid``
    which transitions have been paid.
    """

    def __init__(self, collected: RolloutBuffer, epoch: int) -> None:
        self.epoch = epoch
        self.observation_space = collected.observation_space
        self.action_space = collected.action_space
        # Copies: SB3 refills the collection buffer during the next rollout.
        self.observations = collected.observations.copy()
        self.actions = collected.actions.copy()
        self.values = collected.values.copy()
        self.log_probs = collected.log_probs.copy()
        self.rewards = np.zeros_like(collected.rewards)
        self.paid = np.zeros(collected.rewards.shape, dtype=bool)

    def pay(self, epoch: int, step: int, credit: LateCredit) -> int:
        """Write the rewards Student step ``(epoch, step)`` pays (``credit``'s paid rows) for this rollout's actions;
        returns how many it paid for older ones.

        Older actions are those of a sample that sat out this rollout's epoch in the ragged last batch the env
        drops: their rollout has been trained on already, so their rewards are dropped. A reward for a later action
        means the rollouts are not the env's epochs, and raises.
        """
        later = credit.epoch > self.epoch
        if later.any():
            raise RuntimeError(
                f"epoch {epoch}, step {step} pays for actions of epoch {int(credit.epoch[later].max())}, but "
                f"the rollout awaiting its rewards is epoch {self.epoch}: each PPO rollout must be one whole Student epoch "
                "(keep n_steps at the env's steps_per_epoch, and do not step the env outside learn())"
            )
        current = credit.epoch == self.epoch
        self.rewards[credit.step[current], credit.slot[current]] = credit.reward[current]
        self.paid[credit.step[current], credit.slot[current]] = True
        return int((~current).sum())

    def paid_buffer(self, device: torch.device | str, buffer_class: type[RolloutBuffer]) -> RolloutBuffer:
        """The paid transitions as one step of ``paid.sum()`` one-step episodes in a ``buffer_class`` (the buffer PPO
        trains on, which computes the returns and advantages: every transition is terminal, so each advantage is the
        reward, as that buffer shapes it, minus the value)."""
        count = int(self.paid.sum())
        if count == 0:
            raise ValueError(f"no transition of the rollout of epoch {self.epoch} has been paid; nothing to train on")
        buffer = buffer_class(1, self.observation_space, self.action_space, device=device, n_envs=count)
        buffer.add(
            self.observations[self.paid],
            self.actions[self.paid],
            self.rewards[self.paid],
            np.ones(count, dtype=np.float32),
            torch.as_tensor(self.values[self.paid]),
            torch.as_tensor(self.log_probs[self.paid]),
        )
        buffer.compute_returns_and_advantage(last_values=torch.zeros(count), dones=np.ones(count, dtype=bool))
        return buffer


class PayPendingRollout(BaseCallback):
    """Pays :class:`agents.ppo.TutorPPO`'s waiting rollout what each step of the current one pays (SB3's public
    per-step hook): the tutor's :meth:`~agents.ppo.TutorPPO.credit` checks the step and writes the payments."""

    def __init__(self, tutor: TutorPPO) -> None:
        super().__init__()
        self.tutor = tutor
        self.position = 0

    def _on_rollout_start(self) -> None:
        self.position = 0
        self.tutor.stale_rewards = 0

    def _on_step(self) -> bool:
        self.tutor.credit(self.position, self.locals["infos"][0])
        self.position += 1
        return True
