"""The reference tutor: Stable-Baselines3 PPO acting per sample with a sigmoid-mean Gaussian policy (docs/design.md,
"The method, as facts").

What differs from stock PPO, and why:

- the action mean is ``sigmoid(action_net(latent))``, so the deterministic weight always lies in [0, 1]; the
  Gaussian's standard deviation is fixed (not learned), as in the reference, and sampled weights are clipped to
  [0, 1] by SB3 before they reach the environment;
- the actor and critic learn at different rates (1e-4 and 3e-4), through two optimiser parameter groups;
- rewards are standardised over each rollout (one Student epoch) before advantages are computed
  (:class:`RolloutNormalizedBuffer`);
- under a reward that pays late (``next_visit``), whose rewards arrive one Student epoch after their actions, it trains
  one rollout late, on the previous rollout's transitions once the current one has paid them (:class:`TutorPPO`; the
  waiting rollout and its payments are :mod:`agents.next_visit`'s).

Every transition is terminal, so each advantage is the sample's reward minus the critic's value of its state.

Stable-Baselines3 internals this module relies on (tested with stable-baselines3 2.9.2, the version the test suite
runs; ``pyproject.toml`` allows 2.4 to 2.x, and a release in that range can change any of them): :class:`TutorPPO`
overrides ``collect_rollouts`` and ``train``, which SB3 does not document as extension points, assigns
``self.rollout_buffer`` between them (``train`` reads that attribute and takes no other buffer), and overrides the
private ``_setup_model``, ``_excluded_save_params`` and ``_update_learning_rate`` (which reads the private
``_current_progress_remaining``); :class:`SigmoidGaussianPolicy`
overrides the private ``ActorCriticPolicy._build`` and ``_get_action_dist_from_latent``. The tutor tests
(``tests/test_tutors.py``, ``tests/test_next_visit_tutors.py``, ``tests/test_resume.py``) train, save, reload and
resume it under each reward, which is where a change of these would show.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import MaybeCallback, Schedule
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from agents.next_visit import PayPendingRollout, PendingRollout, paid_credit, pays_late
from agents.vec_env import as_per_sample_vec_env


class SigmoidGaussianPolicy(ActorCriticPolicy):
    """Actor-critic MLPs (64-64 tanh) whose Gaussian action has a sigmoid mean and a fixed standard deviation."""

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        lr_schedule: Schedule,
        critic_lr_scale: float = 3.0,
        action_std: float = 0.2,
        **kwargs: Any,
    ) -> None:
        self.critic_lr_scale = critic_lr_scale
        kwargs.setdefault("net_arch", {"pi": [64, 64], "vf": [64, 64]})
        kwargs.setdefault("activation_fn", nn.Tanh)
        super().__init__(observation_space, action_space, lr_schedule, log_std_init=math.log(action_std), **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        self.log_std.requires_grad_(False)
        critic = [*self.mlp_extractor.value_net.parameters(), *self.value_net.parameters()]
        critic_ids = {id(p) for p in critic}
        actor = [p for p in self.parameters() if p.requires_grad and id(p) not in critic_ids]
        base_lr = lr_schedule(1)
        self.optimizer = self.optimizer_class(
            [
                {"params": actor, "lr": base_lr, "lr_scale": 1.0},
                {"params": critic, "lr": base_lr * self.critic_lr_scale, "lr_scale": self.critic_lr_scale},
            ],
            lr=base_lr,
            **self.optimizer_kwargs,
        )

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor) -> Distribution:
        return self.action_dist.proba_distribution(torch.sigmoid(self.action_net(latent_pi)), self.log_std)

    def mean_weight(self, observations: torch.Tensor) -> torch.Tensor:
        """Deterministic weights in [0, 1] for a batch of states; differentiable, for behavioural cloning."""
        features = self.extract_features(observations, self.pi_features_extractor)
        return torch.sigmoid(self.action_net(self.mlp_extractor.forward_actor(features))).squeeze(-1)


class RolloutNormalizedBuffer(RolloutBuffer):
    """Rollout buffer that standardises the rewards of each rollout before computing advantages (a rollout is one
    Student epoch for the tutors here, whose ``n_steps`` default to ``steps_per_epoch``)."""

    def compute_returns_and_advantage(self, last_values: torch.Tensor, dones: np.ndarray) -> None:
        self.rewards = (self.rewards - self.rewards.mean()) / (self.rewards.std() + 1e-8)
        super().compute_returns_and_advantage(last_values, dones)


class TutorPPO(PPO):
    """PPO tutor with the reference hyper-parameters; one rollout is one Student epoch.

    ``env`` is a curriculum environment (it is wrapped in the per-sample SB3 view) or an SB3 ``VecEnv``.
    ``n_steps`` defaults to the environment's steps per epoch, so each update sees every transition of
    one epoch. Other keywords go to :class:`stable_baselines3.PPO`.

    ``next_visit`` (default: whether the environment's reward pays late, as ``next_visit`` does) makes the tutor train
    one rollout late, because such a reward pays each action one Student epoch after it was taken. The previous rollout waits as
    :attr:`pending_rollout` (saved with the model, so that a run checkpointed at an epoch start resumes exactly);
    every reward the current rollout's steps pay is written into it at the (step, slot) its ``reward_for`` names;
    when the current rollout ends, PPO trains on the previous one's paid transitions, with their rewards
    standardised, and the current one starts waiting. The first rollout (of the run and of each episode)
    therefore trains nothing, and the last epoch's actions are never paid, so never trained on. Paid rewards of
    actions older than the previous rollout (samples the ragged last batch left out of an epoch) are dropped;
    ``paid_transitions`` and ``stale_rewards`` count, for the last rollout, the transitions trained on and the rewards
    dropped (both logged under ``train/``). The trained rollout was collected by the policy before the last update,
    so its log-probabilities are one update older than the policy being trained: PPO's probability ratio corrects for
    that and its clipping bounds the step, as they do for the later epochs of any update. Each rollout must be exactly
    one Student epoch, which is checked.
    """

    def __init__(
        self,
        env: gym.Env | VecEnv | None,
        learning_rate: float = 1e-4,
        critic_learning_rate: float = 3e-4,
        n_steps: int | None = None,
        batch_size: int = 512,
        n_epochs: int = 8,
        gamma: float = 0.99,
        clip_range: float = 0.2,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        action_std: float = 0.2,
        policy: type[ActorCriticPolicy] = SigmoidGaussianPolicy,
        policy_kwargs: dict[str, Any] | None = None,
        next_visit: bool | None = None,
        **kwargs: Any,
    ) -> None:
        venv = as_per_sample_vec_env(env)
        self.next_visit = pays_late(venv) if next_visit is None and venv is not None else bool(next_visit)
        # Saved with the model (SB3's load restores them), so that a checkpoint taken at an epoch start, when the
        # previous rollout still awaits its rewards, resumes exactly.
        self.pending_rollout: PendingRollout | None = None
        self.paid_transitions = 0
        self.stale_rewards = 0
        # Without an env (SB3's ``load``), the saved settings replace these right after construction.
        if venv is not None:
            if n_steps is None:
                n_steps = venv.get_attr("steps_per_epoch")[0]
            if self.next_visit:
                _check_one_epoch(n_steps, venv.get_attr("steps_per_epoch")[0])
            # A minibatch larger than the rollout would silently shrink to it; make it explicit.
            batch_size = min(batch_size, n_steps * venv.num_envs)
        policy_kwargs = {
            "critic_lr_scale": critic_learning_rate / learning_rate,
            "action_std": action_std,
            **(policy_kwargs or {}),
        }
        # One rollout is one Student epoch, whose size rarely divides by the mini-batch: SB3 warns about the short
        # last mini-batch, which is expected here and says nothing the user can act on.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*truncated mini-batch", category=UserWarning)
            super().__init__(
                policy,
                venv,
                learning_rate=learning_rate,
                n_steps=n_steps or 1,
                batch_size=batch_size,
                n_epochs=n_epochs,
                gamma=gamma,
                clip_range=clip_range,
                ent_coef=ent_coef,
                vf_coef=vf_coef,
                policy_kwargs=policy_kwargs,
                rollout_buffer_class=RolloutNormalizedBuffer,
                **kwargs,
            )

    def _setup_model(self) -> None:
        super()._setup_model()
        # Under next_visit, SB3 collects into this buffer and ``rollout_buffer`` becomes the paid previous rollout.
        self._collection_buffer = self.rollout_buffer
        self._collection_epoch = 0

    def _excluded_save_params(self) -> list[str]:
        # SB3's only way to keep an attribute out of the saved model: the collection buffer is rebuilt by _setup_model.
        return [*super()._excluded_save_params(), "_collection_buffer"]

    def learn(self, total_timesteps: int, callback: MaybeCallback = None, **kwargs: Any) -> TutorPPO:
        """SB3's ``learn``; under a reward that pays late, a callback of its own pays the waiting rollout at each step."""
        if self.next_visit:
            given = [] if callback is None else callback if isinstance(callback, list) else [callback]
            callback = [PayPendingRollout(self), *(c if isinstance(c, BaseCallback) else ConvertCallback(c) for c in given)]
        return super().learn(total_timesteps, callback=callback, **kwargs)

    def collect_rollouts(self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int) -> bool:
        if not self.next_visit:
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        # ``rollout_buffer`` is what the last update trained on; SB3's ``train`` reads ``self.rollout_buffer`` and has
        # no argument or hook to give it another, so the paid previous rollout is swapped in here. This rollout's
        # payments go to ``pending_rollout`` (:class:`~agents.next_visit.PayPendingRollout`).
        if not super().collect_rollouts(env, callback, self._collection_buffer, n_rollout_steps):
            return False
        pending = self.pending_rollout
        self.paid_transitions = 0 if pending is None else int(pending.paid.sum())
        if pending is not None and self.paid_transitions:
            self.rollout_buffer = pending.paid_buffer(self.device, RolloutNormalizedBuffer)
        self.pending_rollout = PendingRollout(self._collection_buffer, self._collection_epoch)
        self.logger.record("train/paid_transitions", self.paid_transitions)
        self.logger.record("train/stale_rewards", self.stale_rewards)
        return True

    def credit(self, position: int, info: dict[str, Any]) -> None:
        """Check that rollout step ``position`` is the env's Student step of the same index, and pay the previous
        rollout what the step (its ``info``) pays."""
        epoch, step, credit = paid_credit(info)
        if step != position:
            raise RuntimeError(
                f"rollout step {position} is Student step {step} of epoch {epoch}: with a reward that pays late each PPO "
                "rollout must be one whole Student epoch, from its first step (keep n_steps at the env's "
                "steps_per_epoch; a learn() stopped by a callback mid-epoch cannot be resumed)"
            )
        if position == 0:
            self._collection_epoch = epoch
        if self.pending_rollout is None:
            # Actions taken before this tutor's first rollout (it joined an episode under way): nobody kept them.
            self.stale_rewards += len(credit.reward)
        else:
            self.stale_rewards += self.pending_rollout.pay(epoch, step, credit)

    def train(self) -> None:
        # Under next_visit the rollout before the first one of a run or episode does not exist or earned nothing.
        if self.next_visit and self.paid_transitions == 0:
            return
        super().train()

    def _update_learning_rate(self, optimizers: list[torch.optim.Optimizer] | torch.optim.Optimizer) -> None:
        learning_rate = self.lr_schedule(self._current_progress_remaining)
        self.logger.record("train/learning_rate", learning_rate)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * group.get("lr_scale", 1.0)

    def pretrain_behaviour_cloning(
        self,
        observations: np.ndarray,
        target_weights: np.ndarray,
        epochs: int = 20,
        batch_size: int = 512,
        learning_rate: float = 1e-3,
    ) -> list[float]:
        """Regress the actor's mean weight onto expert weights by MSE; returns the mean loss of each epoch.

        Targets must lie in [0, 1], the range the actor's sigmoid mean can reach.
        """
        targets = np.asarray(target_weights, dtype=np.float32)
        if targets.min() < 0.0 or targets.max() > 1.0:
            raise ValueError(f"behavioural-cloning targets must lie in [0, 1], got range [{targets.min()}, {targets.max()}]")
        observations_t = torch.as_tensor(observations, dtype=torch.float32, device=self.device)
        targets_t = torch.as_tensor(targets, device=self.device)
        optimizer = torch.optim.Adam([p for p in self.policy.parameters() if p.requires_grad], lr=learning_rate)
        generator = torch.Generator().manual_seed(self.seed or 0)
        self.policy.set_training_mode(True)
        history = []
        for _ in range(epochs):
            order = torch.randperm(len(targets_t), generator=generator)
            losses = []
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size].to(self.device)
                loss = nn.functional.mse_loss(self.policy.mean_weight(observations_t[index]), targets_t[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            history.append(float(np.mean(losses)))
        self.policy.set_training_mode(False)
        return history


def _check_one_epoch(n_steps: int, steps_per_epoch: int) -> None:
    if n_steps != steps_per_epoch:
        raise ValueError(
            f"with the next_visit reward a PPO rollout must be one Student epoch, n_steps={steps_per_epoch} "
            f"(steps_per_epoch), got n_steps={n_steps}: each rollout is trained on once the next one has paid its "
            "rewards; leave n_steps unset"
        )


def loss_rank_targets(ema_losses: np.ndarray, high: float = 0.9, low: float = 0.3) -> np.ndarray:
    """The reference's expert weights: ``high`` for samples whose EMA loss is above the mean, ``low`` for the rest."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"need 0 <= low <= high <= 1, got low={low}, high={high}")
    ema_losses = np.asarray(ema_losses)
    return np.where(ema_losses > ema_losses.mean(), high, low).astype(np.float32)
