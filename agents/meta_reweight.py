"""Meta-gradient reweighting on a trusted clean set, as tutors: Learning to Reweight (``l2rw``; Ren et al., ICML 2018)
and Meta-Weight-Net (``meta_weight_net``; Shu et al., NeurIPS 2019).

Both weigh a training batch by what each sample's gradient would do to the loss of a batch of trusted samples through
one virtual SGD step, ``θ' = θ - α ∇θ (1/B) Σ_i w_i ℓ_i(θ)``. The derivative of the trusted loss ``L(θ')`` with
respect to ``w_i`` is ``-(α/B) ∇L(θ')·∇ℓ_i(θ)``: the alignment of the sample's gradient with the trusted set's. The
tutor parameter ``virtual_step`` says which parameters ``θ`` the step moves (:data:`VIRTUAL_STEPS`):

- ``"student"``, the whole Student, as both papers do: one Jacobian-vector product of the batch's per-sample losses
  along the trusted gradient gives every sample's alignment at once (``torch.func.jvp`` through functional calls of
  the Student), exactly, with no per-sample gradient and no second backward; 3.5-3.8 (``l2rw``) and 4.3-4.7
  (``meta_weight_net``) plain steps (forward, backward, Adam step) a step.
- ``"last_stage"``, the backbone's last feature stage (the module timm's ``feature_info`` names last) and every
  parameter after it, the head included, as the papers allow: the same computation as ``"student"`` with only those
  parameters differentiated and the others held (:func:`last_stage_parameters`), so the trusted gradient's backward
  and the tangents stop at the last stage, while every forward still runs through the whole backbone. Exact for a
  step of those parameters; 2.3 (``l2rw``) and 2.95 (``meta_weight_net``) plain steps a step on ``regnetx_002`` at
  64 px, whose last stage holds 90% of the parameters. A backbone without ``feature_info`` has no last stage to name.
- ``"head"``, the Student's final linear layer alone, in closed form. With the head's inputs ``f_i`` and softmax
  errors ``e_i = p_i - onehot(y_i)`` of the training forward (already computed: no pass through the backbone), a
  sample's head gradient is ``e_i [f_i; 1]ᵀ``, the trusted batch's (one no-grad forward) ``G = mean_j e_j [f_j; 1]ᵀ``,
  and the alignment ``e_iᵀ G [f_i; 1]``. Meta-Weight-Net's virtual step moves only the head,
  ``W' = W - α mean_i w_i e_i [f_i; 1]ᵀ``; the backbone, hence the trusted features, stay, so the trusted logits after
  it are ``W' [f_j; 1]``, whose errors ``e'_j`` give ``G' = mean_j e'_j [f_j; 1]ᵀ`` and the alignment
  ``e_iᵀ G' [f_i; 1]``. It is exact for a step of the head alone, and an approximation of the papers' step of the
  whole network: it leaves out how each sample's gradient would move the backbone. 1.3-1.45 plain steps a step.

Measured against the exact weights on teaching Students of protocol v1
(``python -m experiments.performance.meta_step``; docs/tutors.md), the head's step stands in for the whole Student's in
``l2rw`` (Spearman correlation of the two versions' weights 0.97 at the median step, agreement on which samples get
weight 0 for 96% of them, the same noise AUROC within 0.002), which takes it by default; in ``meta_weight_net`` the
per-sample meta-gradients agree less (Spearman 0.65 at the median step: on a Student trained with nearly uniform
weights the head's part of the alignments is at many steps small beside the backbone's, which then sets the whole
Student's ranking), and the network's meta step, though pointing the same way at the median step (cosine 0.94),
reverses at some steps, so it keeps the exact step by default. End to end, though, on 16 paired teaching Students
(``experiments/configs/check_v1_meta_step.yaml``, its rule fixed before it ran), the head's step trained Students that
test as the exact step's do (head − exact +0.005 [−0.005, +0.016] seen AUC, +0.004 [−0.002, +0.011] unseen AUC) at
about a third of the cost, so grids may set ``virtual_step: "head"`` for it (``protocol_v1_scratch`` does).
The last stage's step ranks the samples as the head's (the same Spearman correlations, 0.93 and 0.65, and noise
AUROCs): the last stage's part of the alignments is 1-2% of the head's, the earlier stages' 2-5 times the head's;
costing more than the head's, it is no tutor's default.

The trusted set is the validation split (clean in every source here: only training labels are flipped), the same one
the ``trusted_probe`` state column fits on; trusted batches of the training batch size are drawn from it in an order
of the tutor's own generator, so the Student's data order and initialisation stay those of every other tutor at the
same seed. ``α`` is the Student's learning rate. Forwards run in training mode with BatchNorm statistics frozen (the
training forward's normalisation), so the tutor leaves no trace in the Student. These tutors weigh the whole batch in
one process: they refuse a Student trained by a process group.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from torch.func import grad

from agents.heuristics import HeuristicTutor, _env_attr, register_rule
from tsrl_env.influence import parameters_split, per_sample_losses, trusted_alignment
from tsrl_env.rewards import _with_bias_input, cross_entropy_errors, head_gradient
from tsrl_env.student import Student
from tsrl_env.trainer import StudentTrainer, TrainingBatch

TRUSTED_SPLIT = "val"


def student_step_alignment(
    trainer: StudentTrainer,
    batch: TrainingBatch,
    trusted: tuple[torch.Tensor, torch.Tensor],
    step_weights: torch.Tensor | None = None,
    moved: Collection[str] | None = None,
) -> torch.Tensor:
    """Every sample's alignment ``∇ℓ_i(θ)·∇L(θ')`` over the Student's parameters named in ``moved`` (default: the
    whole Student), exactly: ``θ' = θ`` without ``step_weights`` (Learning to Reweight's step of size 0), else the
    virtual SGD step ``θ' = θ - α ∇θ (1/B) Σ_i w_i ℓ_i(θ)`` of those parameters with those weights ``w`` (``α``: the
    Student's learning rate), the others held where they are."""
    student = trainer.student
    if step_weights is None:
        return trusted_alignment(student, batch.images, batch.labels, *trusted, moved=moved)
    params, constants = parameters_split(student, moved)
    with student.frozen_batch_statistics():
        step = grad(lambda p: (step_weights * per_sample_losses(student, p, batch.images, batch.labels, constants)).mean())(
            params
        )
    virtual = {name: p - trainer.config.lr * step[name] for name, p in params.items()}
    return trusted_alignment(student, batch.images, batch.labels, *trusted, trusted_at=virtual, moved=moved)


def last_stage_step_alignment(
    trainer: StudentTrainer,
    batch: TrainingBatch,
    trusted: tuple[torch.Tensor, torch.Tensor],
    step_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`student_step_alignment` over the parameters of :func:`last_stage_parameters` alone: the backbone's last
    feature stage and everything after it, the head included."""
    return student_step_alignment(trainer, batch, trusted, step_weights, moved=last_stage_parameters(trainer.student))


def last_stage_parameters(student: Student) -> list[str]:
    """The names of the Student's parameters from its backbone's last feature stage on: that stage's (the module timm's
    ``feature_info`` names last, e.g. ``s4`` of a RegNet, ``layer4`` of a ResNet) and every parameter registered after
    it (final norms, the head). A ValueError for a model without ``feature_info`` (a Student wrapped with
    ``classifier_layer=`` around a model other than timm's)."""
    info = getattr(student.model, "feature_info", None)
    if not info:
        raise ValueError(
            f"virtual_step 'last_stage' needs a timm backbone whose feature_info names its stages; "
            f"{type(student.model).__name__} has none: use virtual_step 'head' or 'student'"
        )
    stage = f"model.{info[-1]['module']}."
    names = [name for name, _ in student.named_parameters()]
    first = next((i for i, name in enumerate(names) if name.startswith(stage)), None)
    if first is None:
        raise ValueError(
            f"the last feature stage of {type(student.model).__name__}, {stage[len('model.') : -1]!r}, has no "
            "parameters: use virtual_step 'head' or 'student'"
        )
    return names[first:]


def head_step_alignment(
    trainer: StudentTrainer,
    batch: TrainingBatch,
    trusted: tuple[torch.Tensor, torch.Tensor],
    step_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every sample's alignment ``e_iᵀ G' [f_i; 1]`` over the Student's head (its final linear layer) alone, in closed
    form (module docstring): from the training forward's head inputs and errors in ``batch`` and one no-grad forward
    of the trusted images; ``G'`` is the trusted head gradient at the head as it is without ``step_weights``, else
    after the virtual SGD step of the head alone with those weights. A head without bias drops the ``1``."""
    images, labels = trusted
    bias = trainer.student.classifier.bias is not None
    errors = cross_entropy_errors(batch.probabilities, batch.labels)
    trusted_logits, trusted_features = trainer.frozen_forward(images)
    if step_weights is not None:
        # W' = W - α S with S = mean_i w_i e_i [f_i; 1]ᵀ moves the trusted logits W [f_j; 1] by -α S [f_j; 1].
        step = head_gradient(step_weights.unsqueeze(1) * errors, batch.features, bias)
        trusted_logits = trusted_logits - trainer.config.lr * _head_inputs(trusted_features, bias) @ step.T
    trusted_errors = cross_entropy_errors(trusted_logits.softmax(dim=1), labels)
    trusted_gradient = head_gradient(trusted_errors, trusted_features, bias)
    return ((errors @ trusted_gradient) * _head_inputs(batch.features, bias)).sum(dim=1)


def _head_inputs(features: torch.Tensor, bias: bool) -> torch.Tensor:
    return _with_bias_input(features) if bias else features


VirtualStep = Callable[[StudentTrainer, TrainingBatch, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None], torch.Tensor]

VIRTUAL_STEPS: dict[str, VirtualStep] = {
    "head": head_step_alignment,
    "last_stage": last_stage_step_alignment,
    "student": student_step_alignment,
}
"""The accepted values of the tutors' ``virtual_step``: which parameters the virtual step moves, as the function
giving every sample's alignment (:func:`head_step_alignment`, :func:`last_stage_step_alignment`,
:func:`student_step_alignment`)."""

STUDENT_NEEDS: dict[str, Callable[[Student], object]] = {
    "head": lambda student: student.classifier,
    "last_stage": last_stage_parameters,
}
"""What a virtual step needs of the Student, read when a tutor is built: its error (the head is not one nn.Linear,
the backbone names no stages) then comes before any training rather than at the first tutored step."""


class _MetaReweightTutor(HeuristicTutor):
    """A tutor that weighs the batch awaiting weights with the Student itself and a trusted set; subclasses set
    :meth:`batch_weights`. ``trusted_batch`` is the size of the trusted batch drawn at every step (the meta-set of one
    step; 0, the default, takes the Student's batch size), capped at the trusted split's size. ``virtual_step`` names
    the parameters the virtual step moves (:data:`VIRTUAL_STEPS`): ``"head"``, the Student's final linear layer,
    ``"last_stage"``, its backbone's last stage and the head, or ``"student"``, all of it, as the papers (the default
    here; a subclass may choose the head where it was measured to stand in for the whole Student). ``trusted_split``
    names the split the trusted batches come from: ``val`` by default; ``val_unseen`` (the embedded benchmark's
    ``val_unseen_size``) makes the tutor a generalisation oracle, which weighs the training samples by what they do to
    the loss on unseen manipulation families, images the Student never trains on and ``test_unseen`` does not hold."""

    kind = "meta-gradient"
    defaults = {"trusted_batch": 0.0, "virtual_step": "student", "trusted_split": TRUSTED_SPLIT}

    def __init__(self, env: gym.Env | VecEnv, seed: int | None = None, **params: float | str) -> None:
        super().__init__(env, seed, **params)
        trainer: StudentTrainer = _env_attr(env, "trainer")
        self.trusted_split = str(self.params["trusted_split"])
        if self.trusted_split not in trainer.splits or self.trusted_split.startswith("test"):
            hint = " (set the dataset option val_unseen_size for val_unseen)" if self.trusted_split == "val_unseen" else ""
            raise ValueError(
                f"the {self.name!r} tutor's trusted_split {self.trusted_split!r} must name a split of clean labels that "
                f"no test uses{hint}; the dataset has {list(trainer.splits)}"
            )
        STUDENT_NEEDS.get(str(self.params["virtual_step"]), lambda student: None)(trainer.student)
        self.trainer = trainer
        self.step_alignment = VIRTUAL_STEPS[self.params["virtual_step"]]
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
        step = self.params["virtual_step"]
        if step not in VIRTUAL_STEPS:
            raise ValueError(
                f"the {self.name!r} tutor needs virtual_step 'head' (the Student's final linear layer alone), 'last_stage' "
                f"(its backbone's last stage and head) or 'student' (the whole Student, exact), got {step!r}"
            )

    def _next_trusted_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        wanted = int(self.params["trusted_batch"]) or self.trainer.batch_size
        size = min(wanted, len(self.trainer.splits[self.trusted_split]))
        if len(self._trusted_order) < size:
            fresh = torch.randperm(len(self.trainer.splits[self.trusted_split]), generator=self.trusted_generator)
            self._trusted_order = torch.cat([self._trusted_order, fresh])
        ids, self._trusted_order = self._trusted_order[:size], self._trusted_order[size:]
        labels = self.trainer.splits[self.trusted_split].labels[ids.to(self.trainer.device)]
        return self.trainer.images_of(self.trusted_split, ids), labels

    def rng_state(self) -> dict[str, Any]:
        return {"trusted_generator": self.trusted_generator.get_state(), "trusted_order": self._trusted_order.clone()}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.trusted_generator.set_state(state["trusted_generator"])
        self._trusted_order = state["trusted_order"].clone()


@register_rule
class LearningToReweight(_MetaReweightTutor):
    """Learning to Reweight (Ren, Zeng, Yang & Urtasun, ICML 2018): each sample's weight is its gradient's alignment
    with a trusted batch's, clipped at 0 (a sample whose step would raise the trusted loss gets weight 0), then scaled
    so the largest is 1. The paper normalises the weights to sum 1 instead; under the Student's Adam, which divides each
    step by the gradient's running scale, the two differ by a constant factor of the loss and move the Student alike.
    The gradients are those of the Student's head by default (``virtual_step: "head"``, measured to stand in for the
    whole Student's; module docstring); ``virtual_step: "student"`` takes the paper's, of the whole Student.
    """

    name = "l2rw"
    defaults = {**_MetaReweightTutor.defaults, "virtual_step": "head"}

    def batch_weights(self, batch: TrainingBatch, trusted: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.weights_from(self.step_alignment(self.trainer, batch, trusted, None))

    @staticmethod
    def weights_from(alignment: torch.Tensor) -> torch.Tensor:
        """The weights of a batch with these alignments: clipped at 0, scaled so that the largest is 1."""
        kept = alignment.clamp_min(0.0)
        largest = kept.max()
        return kept / largest if largest > 0 else kept


@register_rule
class MetaWeightNet(_MetaReweightTutor):
    """Meta-Weight-Net (Shu et al., NeurIPS 2019): a small network (1-100-1, ReLU, sigmoid output) maps a sample's
    loss to its weight and learns online. A meta step: weights from the network, a virtual SGD step with them (of the
    whole Student by default, or of its head or last stage: ``virtual_step``), the trusted loss after that step, and its
    gradient with respect to the network's parameters (Adam, ``meta_lr``); the Student is then weighted by the updated
    network. The paper takes one meta step per Student step (``meta_interval: 1``); ``meta_interval: k`` takes one at
    the first of every ``k`` Student steps, the network weighing the batches between as it stands, so that the exact
    step's cost is paid once in ``k`` steps (at ``k = 4`` measured not to stand in for the paper's: docs/tutors.md). The
    network's parameters, optimiser and step count are kept in run checkpoints.
    """

    name = "meta_weight_net"
    defaults = {"meta_lr": 1e-3, "hidden": 100.0, "meta_interval": 1.0, **_MetaReweightTutor.defaults}

    def __init__(self, env: gym.Env | VecEnv, seed: int | None = None, **params: float | str) -> None:
        super().__init__(env, seed, **params)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if seed is None else seed)
            hidden = int(self.params["hidden"])
            self.network = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid()).to(
                self.trainer.device
            )
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.params["meta_lr"])
        self.steps_weighed = 0

    def _check_params(self) -> None:
        super()._check_params()
        interval = self.params["meta_interval"]
        if self.params["meta_lr"] <= 0 or self.params["hidden"] < 1 or interval < 1 or interval != int(interval):
            raise ValueError(
                f"meta_weight_net needs meta_lr > 0, hidden >= 1 and meta_interval a whole number >= 1, got {self.params}"
            )

    def batch_weights(self, batch: TrainingBatch, trusted: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs = batch.losses.detach().float().unsqueeze(1)
        if self.steps_weighed % int(self.params["meta_interval"]) == 0:
            self._meta_step(batch, trusted, inputs)
        self.steps_weighed += 1
        with torch.no_grad():
            return self.network(inputs).squeeze(1)

    def _meta_step(self, batch: TrainingBatch, trusted: tuple[torch.Tensor, torch.Tensor], inputs: torch.Tensor) -> None:
        step_size = self.trainer.config.lr
        with torch.no_grad():
            before = self.network(inputs).squeeze(1)
        alignment = self.step_alignment(self.trainer, batch, trusted, before)
        # d L(θ') / d φ = -(α / B) Σ_i alignment_i d w_i / d φ: this surrogate has exactly that gradient.
        with torch.enable_grad():
            surrogate = -(step_size / len(inputs)) * (alignment.detach() * self.network(inputs).squeeze(1)).sum()
            self.optimizer.zero_grad(set_to_none=True)
            surrogate.backward()
            self.optimizer.step()

    def rng_state(self) -> dict[str, Any]:
        network = {name: value.clone() for name, value in self.network.state_dict().items()}
        optimizer = copy.deepcopy(self.optimizer.state_dict())
        return {**super().rng_state(), "network": network, "optimizer": optimizer, "steps_weighed": self.steps_weighed}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        super().set_rng_state(state)
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        # Checkpoints written before meta_interval existed carry no count; they were taken at meta_interval 1, where
        # the count changes nothing.
        self.steps_weighed = state.get("steps_weighed", 0)


__all__ = [
    "LearningToReweight",
    "MetaWeightNet",
    "VIRTUAL_STEPS",
    "head_step_alignment",
    "last_stage_parameters",
    "last_stage_step_alignment",
    "student_step_alignment",
]
