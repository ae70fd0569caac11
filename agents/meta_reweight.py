"""Meta-gradient reweighting on a trusted clean set, as tutors: Learning to Reweight (``l2rw``; Ren et al., ICML 2018)
and Meta-Weight-Net (``meta_weight_net``; Shu et al., NeurIPS 2019).

Both weigh a training batch by what each sample's gradient would do to the loss of a batch of trusted samples through
one virtual SGD step of the whole Student, ``θ' = θ - α ∇θ (1/B) Σ_i w_i ℓ_i(θ)``. The derivative of the trusted loss
``L(θ')`` with respect to ``w_i`` is ``-(α/B) ∇L(θ')·∇ℓ_i(θ)``: the alignment of the sample's gradient with the
trusted set's. One Jacobian-vector product of the batch's per-sample losses along the trusted gradient gives every
sample's alignment at once (``torch.func.jvp`` through functional calls of the Student), exactly, with no per-sample
gradient and no second backward.

The trusted set is the validation split (clean in every source here: only training labels are flipped), the same one
the ``trusted_probe`` state column fits on; trusted batches of the training batch size are drawn from it in an order
of the tutor's own generator, so the Student's data order and initialisation stay those of every other tutor at the
same seed. ``α`` is the Student's learning rate. Forwards run in training mode with BatchNorm statistics frozen, so
the tutor leaves no trace in the Student. These tutors weigh the whole batch in one process: they refuse a Student
trained by a process group.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from torch.func import functional_call, grad, jvp

from agents.heuristics import HeuristicTutor, _env_attr
from tsrl_env.student import Student
from tsrl_env.trainer import StudentTrainer, TrainingBatch

Parameters = dict[str, torch.Tensor]

TRUSTED_SPLIT = "val"


def per_sample_losses(student: Student, params: Parameters, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each image under ``student`` with its parameters replaced by ``params``."""
    buffers = dict(student.named_buffers())
    logits, _ = functional_call(student, (params, buffers), (images,))
    return F.cross_entropy(logits, labels, reduction="none")


def trusted_alignment(
    student: Student,
    images: torch.Tensor,
    labels: torch.Tensor,
    trusted_images: torch.Tensor,
    trusted_labels: torch.Tensor,
    trusted_at: Parameters | None = None,
) -> torch.Tensor:
    """``∇ℓ_i(θ)·∇L(θ*)`` for every training image ``i``: the gradient of its loss at the Student's parameters ``θ``
    against the gradient of the mean trusted loss ``L`` at ``trusted_at`` (default ``θ``). Positive: a step on the
    sample lowers the trusted loss."""
    params = {name: p.detach() for name, p in student.named_parameters()}
    with student.frozen_batch_statistics():
        trusted_gradient = grad(lambda p: per_sample_losses(student, p, trusted_images, trusted_labels).mean())(
            params if trusted_at is None else trusted_at
        )
        _, alignment = jvp(lambda p: per_sample_losses(student, p, images, labels), (params,), (trusted_gradient,))
    return alignment


class _MetaReweightTutor(HeuristicTutor):
    """A tutor that weighs the batch awaiting weights with the Student itself and a trusted set; subclasses set
    :meth:`batch_weights`. ``trusted_batch`` is the size of the trusted batch drawn at every step (the meta-set of one
    step; 0, the default, takes the Student's batch size), capped at the trusted split's size."""

    defaults = {"trusted_batch": 0.0}

    def __init__(self, env: gym.Env | VecEnv, seed: int | None = None, **params: float) -> None:
        super().__init__(env, seed, **params)
        trainer: StudentTrainer = _env_attr(env, "trainer")
        if TRUSTED_SPLIT not in trainer.splits:
            raise ValueError(
                f"the {self.name!r} tutor needs a {TRUSTED_SPLIT!r} split of clean labels; the dataset has {list(trainer.splits)}"
            )
        self.trainer = trainer
        self.trusted_generator = torch.Generator().manual_seed(0 if seed is None else seed)
        self._trusted_order = torch.empty(0, dtype=torch.long)

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        batch = _env_attr(self.env, "pending_batch")
        if len(batch.row_ids) != len(batch.ids):
            raise ValueError(
                f"the {self.name!r} tutor weighs the whole batch in one process; train the Student without a process group"
            )
        if len(states) != len(batch.ids):
            raise ValueError(
                f"the {self.name!r} tutor weights the whole batch awaiting weights ({len(batch.ids)} rows), "
                f"got {len(states)} rows"
            )
        return self.batch_weights(batch, self._next_trusted_batch()).cpu().numpy()

    def batch_weights(self, batch: TrainingBatch, trusted: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One weight per sample of ``batch`` (the batch awaiting weights), given a trusted batch (images, labels)."""
        raise NotImplementedError

    def _check_params(self) -> None:
        size = self.params["trusted_batch"]
        if size < 0 or size != int(size):
            raise ValueError(f"the {self.name!r} tutor needs trusted_batch a whole number >= 0 (0: the batch size), got {size}")

    def _next_trusted_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        wanted = int(self.params["trusted_batch"]) or self.trainer.batch_size
        size = min(wanted, len(self.trainer.splits[TRUSTED_SPLIT]))
        if len(self._trusted_order) < size:
            fresh = torch.randperm(len(self.trainer.splits[TRUSTED_SPLIT]), generator=self.trusted_generator)
            self._trusted_order = torch.cat([self._trusted_order, fresh])
        ids, self._trusted_order = self._trusted_order[:size], self._trusted_order[size:]
        labels = self.trainer.splits[TRUSTED_SPLIT].labels[ids.to(self.trainer.device)]
        return self.trainer.images_of(TRUSTED_SPLIT, ids), labels

    def rng_state(self) -> dict[str, Any]:
        return {"trusted_generator": self.trusted_generator.get_state(), "trusted_order": self._trusted_order.clone()}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.trusted_generator.set_state(state["trusted_generator"])
        self._trusted_order = state["trusted_order"].clone()


class LearningToReweight(_MetaReweightTutor):
    """Learning to Reweight (Ren, Zeng, Yang & Urtasun, ICML 2018): each sample's weight is its gradient's alignment
    with a trusted batch's, clipped at 0 (a sample whose step would raise the trusted loss gets weight 0), then scaled
    so the largest is 1. The paper normalises the weights to sum 1 instead; under the Student's Adam, which divides each
    step by the gradient's running scale, the two differ by a constant factor of the loss and move the Student alike.
    """

    name = "l2rw"

    def batch_weights(self, batch: TrainingBatch, trusted: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        kept = trusted_alignment(self.trainer.student, batch.images, batch.labels, *trusted).clamp_min(0.0)
        largest = kept.max()
        return kept / largest if largest > 0 else kept


class MetaWeightNet(_MetaReweightTutor):
    """Meta-Weight-Net (Shu et al., NeurIPS 2019): a small network (1-100-1, ReLU, sigmoid output) maps a sample's
    loss to its weight and learns online, one meta step per Student step: weights from the network, a virtual SGD step
    of the Student with them, the trusted loss after that step, and its gradient with respect to the network's
    parameters (Adam, ``meta_lr``); the Student is then weighted by the updated network. The network's parameters and
    optimiser are kept in run checkpoints.
    """

    name = "meta_weight_net"
    defaults = {"meta_lr": 1e-3, "hidden": 100.0, **_MetaReweightTutor.defaults}

    def __init__(self, env: gym.Env | VecEnv, seed: int | None = None, **params: float) -> None:
        super().__init__(env, seed, **params)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if seed is None else seed)
            hidden = int(self.params["hidden"])
            self.network = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid()).to(
                self.trainer.device
            )
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.params["meta_lr"])

    def _check_params(self) -> None:
        super()._check_params()
        if self.params["meta_lr"] <= 0 or self.params["hidden"] < 1:
            raise ValueError(f"meta_weight_net needs meta_lr > 0 and hidden >= 1, got {self.params}")

    def batch_weights(self, batch: TrainingBatch, trusted: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        student = self.trainer.student
        step_size = self.trainer.config.lr
        inputs = batch.losses.detach().float().unsqueeze(1)
        with torch.no_grad():
            before = self.network(inputs).squeeze(1)
        params = {name: p.detach() for name, p in student.named_parameters()}
        with student.frozen_batch_statistics():
            step = grad(lambda p: (before * per_sample_losses(student, p, batch.images, batch.labels)).mean())(params)
        virtual = {name: p - step_size * step[name] for name, p in params.items()}
        alignment = trusted_alignment(student, batch.images, batch.labels, *trusted, trusted_at=virtual)
        # d L(θ') / d φ = -(α / B) Σ_i alignment_i d w_i / d φ: this surrogate has exactly that gradient.
        with torch.enable_grad():
            surrogate = -(step_size / len(inputs)) * (alignment.detach() * self.network(inputs).squeeze(1)).sum()
            self.optimizer.zero_grad(set_to_none=True)
            surrogate.backward()
            self.optimizer.step()
        with torch.no_grad():
            return self.network(inputs).squeeze(1)

    def rng_state(self) -> dict[str, Any]:
        network = {name: value.clone() for name, value in self.network.state_dict().items()}
        return {**super().rng_state(), "network": network, "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        super().set_rng_state(state)
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])


META_REWEIGHT_TUTORS: dict[str, type[_MetaReweightTutor]] = {cls.name: cls for cls in (LearningToReweight, MetaWeightNet)}

__all__ = ["LearningToReweight", "META_REWEIGHT_TUTORS", "MetaWeightNet", "per_sample_losses", "trusted_alignment"]
