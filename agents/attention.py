"""A batch-aware learned tutor: PPO with a self-attention policy over the rows of the batch observation.

The per-sample tutors weight each sample from its own state row; this one sees the whole ``(B, D)`` batch
observation at once, so a sample's weight can depend on the rest of the batch (how hard it is *relative* to
its batch-mates, how many similar samples there are, ...). The policy is a set network, permutation-equivariant
over the rows:

    state rows --(row-wise MLP)--> embeddings --(self-attention blocks over the B rows)--> row features
    row features --(row-wise MLP, Linear(., 1), sigmoid)--> mean weight of each row       (actor)
    row features --(mean over rows, MLP, Linear(., 1))-----> value of the batch          (critic)

There is no positional encoding, so permuting the rows permutes the weights and leaves the value unchanged.
As in :class:`~agents.ppo.SigmoidGaussianPolicy`, the action is a Gaussian with a sigmoid mean and a fixed
standard deviation, and the actor and critic learn at different rates.

The reference method's GRPO tutor uses graph attention over a k-nearest-neighbour graph of the batch; plain
self-attention over all rows is the accepted simpler variant (every row attends to every other, and the
attention weights learn which neighbours matter instead of a fixed k-NN graph).

PPO trains it on the batch environment itself (one transition per Student mini-batch, reward = the mean of
the per-sample rewards) through :class:`~agents.vec_env.BatchSB3VecEnv`, which does not reset when the Student's
episode ends.

Stable-Baselines3 internals this module relies on, beyond :class:`~agents.ppo.TutorPPO`'s (listed in
:mod:`agents.ppo`, same versions): :class:`AttentionPPO` overrides the private ``_wrap_env``;
:class:`SetAttentionPolicy` overrides the private ``ActorCriticPolicy._build`` (to swap in the row-wise action head
before the networks are built) and ``_build_mlp_extractor``; :class:`RowwiseMlpExtractor` subclasses ``MlpExtractor``,
relying on its constructor's arguments and its ``value_net`` attribute. ``tests/test_attention.py`` trains, saves and reloads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, MlpExtractor
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from agents.ppo import SigmoidGaussianPolicy, TutorPPO
from agents.vec_env import as_batch_vec_env, check_batch_spaces


class RowAttentionExtractor(BaseFeaturesExtractor):
    """Features of each row in the context of its batch: row-wise MLP embedding, then self-attention blocks.

    Maps observations ``(n, B, D)`` to ``(n, B, embed_dim)``; works for any number of rows ``B``.
    ``features_dim`` is the width of one row's features.
    """

    def __init__(self, observation_space: gym.spaces.Box, embed_dim: int = 64, num_heads: int = 4, num_blocks: int = 2) -> None:
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})")
        super().__init__(observation_space, embed_dim)
        state_dim = observation_space.shape[-1]
        self.embed = nn.Sequential(nn.Linear(state_dim, embed_dim), nn.Tanh(), nn.Linear(embed_dim, embed_dim))
        # Pre-norm blocks keep the residual stream stable without warm-up; no dropout, because PPO's
        # probability ratios must compare the same deterministic network in rollout and update.
        self.blocks = nn.Sequential(
            *(
                nn.TransformerEncoderLayer(
                    embed_dim, num_heads, dim_feedforward=2 * embed_dim, dropout=0.0, batch_first=True, norm_first=True
                )
                for _ in range(num_blocks)
            )
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(self.embed(observations)))


class RowwiseMlpExtractor(MlpExtractor):
    """SB3's actor and critic MLPs on row features: the actor's acts on each row, the critic's on the mean row."""

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        # Mean-pooling makes the value invariant to the order of the rows and to their number.
        return self.value_net(features.mean(dim=-2))


class RowwiseDiagGaussianDistribution(DiagGaussianDistribution):
    """Diagonal Gaussian whose mean comes from one ``Linear(latent, 1)`` shared by all rows.

    SB3's ``Linear(latent, B)`` on a flat latent would tie each output to a position; sharing one head across
    rows is what keeps the actor equivariant.
    """

    def proba_distribution_net(self, latent_dim: int, log_std_init: float = 0.0) -> tuple[nn.Module, nn.Parameter]:
        mean_actions = nn.Sequential(nn.Linear(latent_dim, 1), nn.Flatten(start_dim=-2))
        log_std = nn.Parameter(torch.full((self.action_dim,), log_std_init), requires_grad=True)
        return mean_actions, log_std


class SetAttentionPolicy(SigmoidGaussianPolicy):
    """Actor-critic over a whole batch observation ``(B, D)``: B weights in [0, 1], equivariant to row order.

    ``embed_dim``, ``num_heads`` and ``num_blocks`` size the shared :class:`RowAttentionExtractor`;
    ``net_arch`` (default ``{"pi": [64], "vf": [64]}``) the row-wise actor and mean-pooled critic heads above it.
    Other keywords are those of :class:`~agents.ppo.SigmoidGaussianPolicy` (``action_std``, ``critic_lr_scale``).
    """

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        lr_schedule: Schedule,
        embed_dim: int = 64,
        num_heads: int = 4,
        num_blocks: int = 2,
        **kwargs: Any,
    ) -> None:
        check_batch_spaces(observation_space, action_space)
        kwargs.setdefault("net_arch", {"pi": [64], "vf": [64]})
        kwargs["features_extractor_class"] = RowAttentionExtractor
        kwargs["features_extractor_kwargs"] = {"embed_dim": embed_dim, "num_heads": num_heads, "num_blocks": num_blocks}
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = RowwiseMlpExtractor(self.features_dim, self.net_arch, self.activation_fn, self.device)

    def _build(self, lr_schedule: Schedule) -> None:
        # Swapped in before the networks are built, so that SB3 builds the row-wise action head.
        self.action_dist = RowwiseDiagGaussianDistribution(get_action_dim(self.action_space))
        super()._build(lr_schedule)

    def mean_weight(self, observations: torch.Tensor) -> torch.Tensor:
        """Deterministic weights in [0, 1], shape ``(n, B)``, of observations ``(n, B, D)``; differentiable."""
        features = self.extract_features(observations, self.pi_features_extractor)
        return torch.sigmoid(self.action_net(self.mlp_extractor.forward_actor(features)))


class AttentionPPO(TutorPPO):
    """PPO tutor acting on whole batches with :class:`SetAttentionPolicy`; one rollout is one Student epoch.

    ``env`` is the batch curriculum environment (or a wrapper of it; it gets the no-reset
    :class:`~agents.vec_env.BatchSB3VecEnv` view) or an SB3 ``VecEnv`` with ``(B, D)`` observations. Callbacks see
    the environment's info as ``infos[0]``. The defaults, and why:

    - ``n_steps`` = the environment's ``steps_per_epoch``: one transition per mini-batch, so an epoch gives only
      that many transitions (62 on the demo config), against ``B`` times more for the per-sample tutors;
    - ``batch_size=16`` (capped at ``n_steps``) and ``n_epochs=4``: a few minibatch updates per rollout, enough
      to move the policy on so few transitions without stepping far outside PPO's clipped trust region, where
      one log-probability sums over all ``B`` weights;
    - ``gamma=0``: each step is credited with its own reward (what the weighted update did to this batch's
      predictions), the same one-step credit as the per-sample tutors; raise it to credit later batches too;
    - learning rates 3e-4 (actor) and 1e-3 (critic), three times the per-sample tutor's, since this tutor gets
      ``B`` times fewer transitions (and updates) per epoch;
    - rewards standardised per rollout, fixed action standard deviation 0.2, as in :class:`~agents.ppo.TutorPPO`.

    The inherited ``pretrain_behaviour_cloning`` takes observations ``(N, B, D)`` and target weights ``(N, B)``.
    """

    def __init__(
        self,
        env: GymEnv | None,
        learning_rate: float = 3e-4,
        critic_learning_rate: float = 1e-3,
        n_steps: int | None = None,
        batch_size: int = 16,
        n_epochs: int = 4,
        gamma: float = 0.0,
        policy: type[SetAttentionPolicy] = SetAttentionPolicy,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            as_batch_vec_env(env),
            learning_rate=learning_rate,
            critic_learning_rate=critic_learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            policy=policy,
            # A whole-batch transition's reward, when it pays late, averages payments for many earlier batches' actions,
            # so the per-sample late credit of TutorPPO does not apply: this tutor credits each step's reward to its
            # action.
            next_visit=False,
            **kwargs,
        )

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        # SB3 would wrap a plain env in a DummyVecEnv, which resets (a new Student) when the episode ends. Its private
        # ``_wrap_env`` is the one place ``__init__``, ``load(..., env=...)`` and ``set_env`` all pass through, and SB3
        # offers no public hook for it: overriding it is the only way to give every one of them the no-reset view.
        return TutorPPO._wrap_env(as_batch_vec_env(env), verbose, monitor_wrapper)


def make_attention_tutor(env: GymEnv, **kwargs: Any) -> AttentionPPO:
    """The batch-aware attention tutor on ``env`` (the batch curriculum environment); keywords go to :class:`AttentionPPO`."""
    return AttentionPPO(env, **kwargs)


def load_attention_tutor(path: str | Path, env: GymEnv | None = None, **kwargs: Any) -> AttentionPPO:
    """An attention tutor saved with ``save(path)``, acting on ``env`` when given; keywords go to SB3's ``load``."""
    return AttentionPPO.load(path, env=env, **kwargs)
