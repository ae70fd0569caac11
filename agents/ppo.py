"""The reference tutor: Stable-Baselines3 PPO acting per sample with a sigmoid-mean Gaussian policy (DESIGN §2).

What differs from stock PPO, and why:

- the action mean is ``sigmoid(action_net(latent))``, so the deterministic weight always lies in [0, 1]; the
  Gaussian's standard deviation is fixed (not learned), as in the reference, and sampled weights are clipped to
  [0, 1] by SB3 before they reach the environment;
- the actor and critic learn at different rates (1e-4 and 3e-4), through two optimiser parameter groups;
- rewards are standardised over each rollout (one Student epoch) before advantages are computed.

Every transition is terminal, so each advantage is the sample's reward minus the critic's value of its state.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

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


class EpochNormalizedRolloutBuffer(RolloutBuffer):
    """Rollout buffer that standardises the rewards of each rollout before computing advantages."""

    def compute_returns_and_advantage(self, last_values: torch.Tensor, dones: np.ndarray) -> None:
        self.rewards = (self.rewards - self.rewards.mean()) / (self.rewards.std() + 1e-8)
        super().compute_returns_and_advantage(last_values, dones)


class TutorPPO(PPO):
    """PPO tutor with the reference hyper-parameters; one rollout is one Student epoch.

    ``env`` is a curriculum environment (it is wrapped in the per-sample SB3 view) or an SB3 ``VecEnv``.
    ``n_steps`` defaults to the environment's steps per epoch, so each update sees every transition of
    one epoch. Other keywords go to :class:`stable_baselines3.PPO`.
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
        **kwargs: Any,
    ) -> None:
        venv = as_per_sample_vec_env(env)
        # Without an env (SB3's ``load``), the saved settings replace these right after construction.
        if venv is not None:
            if n_steps is None:
                n_steps = venv.get_attr("steps_per_epoch")[0]
            # A minibatch larger than the rollout would silently shrink to it; make it explicit.
            batch_size = min(batch_size, n_steps * venv.num_envs)
        policy_kwargs = {
            "critic_lr_scale": critic_learning_rate / learning_rate,
            "action_std": action_std,
            **(policy_kwargs or {}),
        }
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
            rollout_buffer_class=EpochNormalizedRolloutBuffer,
            **kwargs,
        )

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


def loss_rank_targets(ema_losses: np.ndarray, high: float = 0.9, low: float = 0.3) -> np.ndarray:
    """The reference's expert weights: ``high`` for samples whose EMA loss is above the mean, ``low`` for the rest."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"need 0 <= low <= high <= 1, got low={low}, high={high}")
    ema_losses = np.asarray(ema_losses)
    return np.where(ema_losses > ema_losses.mean(), high, low).astype(np.float32)
