"""Fixed weighting rules from the domain-generalisation literature of deepfake detection, for clean labels.

They weigh what a detector is said to overfit to: the manipulation families it trains on, and the easy real samples.
Each reads the pending batch's samples from the environment (their family, their current loss), as a researcher's
training loop would on FaceForensics++, whose every fake names its method; none reads a label's correctness.

- ``family_balance``: every fake family and the reals as a whole carry equal shares of the weight, as class- and
  method-balanced sampling does (Cui et al., CVPR 2019, for classes; DeepfakeBench's training on FF++ samples each
  method equally often).
- ``hard_reals``: full weight for fakes and for the real samples the Student finds hardest (its loss above the batch's
  median real loss), ``easy_real_weight`` for the other reals, after the observation that detectors generalise better
  when the real class is learned tightly (one-class and real-emphasis detectors, e.g. Larue et al., ICCV 2023 SeeABLE).

Mixing in pseudo-fakes (self-blended images, Shiohara & Yamasaki, CVPR 2022) changes the data rather than its weights:
it is an augmentation, outside what a tutor chooses.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

from agents.heuristics import HeuristicTutor, _env_attr, register_rule
from tsrl_env.data.base import REAL_FAMILY
from tsrl_env.trainer import StudentTrainer


class _BatchRule(HeuristicTutor):
    """A rule that weighs the batch awaiting weights from its samples' families and losses (the whole batch, in one
    process)."""

    def __init__(self, env: gym.Env | VecEnv, seed: int | None = None, **params: float | str) -> None:
        super().__init__(env, seed, **params)
        self.trainer: StudentTrainer = _env_attr(env, "trainer")
        self.families = self.trainer.splits["train"].families

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        batch = _env_attr(self.env, "pending_batch")
        if len(batch.row_ids) != len(batch.ids) or len(states) != len(batch.ids):
            raise ValueError(f"the {self.name!r} tutor weighs the whole batch awaiting weights, in one process")
        return self.batch_weights(self.families[batch.ids], batch.batch_losses).cpu().numpy()

    def batch_weights(self, families: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_rule
class FamilyBalance(_BatchRule):
    """Each fake family, and the reals together, weigh as much in total over the training split: a sample's weight is
    the count of the rarest group over its own group's count (its family's, or the reals'), so the rarest weighs 1."""

    name = "family_balance"

    def __init__(self, env: gym.Env | VecEnv, seed: int | None = None, **params: float | str) -> None:
        super().__init__(env, seed, **params)
        own = self.families[: self.trainer.own_training_size]
        # The reals as one group beside the families: their total weight equals one family's. Sorted groups, so a
        # batch's samples find theirs with one searchsorted.
        self.groups, counts = torch.unique(own, return_counts=True)
        if not (self.groups == REAL_FAMILY).any() or (self.groups == REAL_FAMILY).all():
            raise ValueError("family_balance needs both real and fake training samples")
        self.weights_by_group = counts.min() / counts.float()

    @property
    def group_weight(self) -> dict[int, float]:
        """Each group's weight: a family's index, or ``REAL_FAMILY`` for the reals."""
        return dict(zip(self.groups.tolist(), self.weights_by_group.tolist(), strict=True))

    def batch_weights(self, families: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        return self.weights_by_group[torch.searchsorted(self.groups, families)]


@register_rule
class HardReals(_BatchRule):
    """Weight 1 for every fake and for the reals whose loss is at or above the batch's median real loss; the easier
    reals weigh ``easy_real_weight``."""

    name = "hard_reals"
    defaults = {"easy_real_weight": 0.5}

    def _check_params(self) -> None:
        if not 0.0 <= self.params["easy_real_weight"] <= 1.0:
            raise ValueError(f"hard_reals needs easy_real_weight in [0, 1], got {self.params['easy_real_weight']}")

    def batch_weights(self, families: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        real = (families == REAL_FAMILY).to(losses.device)
        weights = torch.ones_like(losses)
        if real.any():
            easy = real & (losses < losses[real].median())
            weights[easy] = self.params["easy_real_weight"]
        return weights.float()


__all__ = ["FamilyBalance", "HardReals"]
