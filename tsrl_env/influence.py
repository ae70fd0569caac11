"""A training sample's influence on the loss of a trusted set, through ``torch.func``.

``trusted_alignment`` gives every sample of a batch its ``∇ℓ_i(θ)·∇L(θ)``: the first-order drop of a trusted batch's mean
loss ``L`` that a step on the sample would bring (Learning to Reweight's quantity, Ren et al., ICML 2018; Koh & Liang's
influence without the Hessian). One backward for the trusted gradient and one Jacobian-vector product of the batch's
per-sample losses along it give every sample's alignment at once, exactly, with no per-sample gradient. The
meta-gradient tutors (:mod:`agents.meta_reweight`) and the ``counterfactual`` reward (:mod:`tsrl_env.rewards`) use it.
Forwards run in training mode with BatchNorm statistics frozen, so nothing here leaves a trace in the Student.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp

from tsrl_env.student import Student

Parameters = dict[str, torch.Tensor]


def parameters_split(student: Student, moved: Collection[str] | None) -> tuple[Parameters, Parameters]:
    """The Student's parameters, detached, split into those named in ``moved`` (all without it) and the others."""
    params = {name: p.detach() for name, p in student.named_parameters()}
    if moved is None:
        return params, {}
    moved = set(moved)
    return {n: p for n, p in params.items() if n in moved}, {n: p for n, p in params.items() if n not in moved}


def per_sample_losses(
    student: Student,
    params: Parameters,
    images: torch.Tensor,
    labels: torch.Tensor,
    constants: Parameters | None = None,
) -> torch.Tensor:
    """Cross-entropy of each image under ``student`` with its parameters replaced by ``params`` and ``constants`` (the
    rest of them, where ``params`` are a subset: a ``torch.func`` transform of ``params`` holds these fixed)."""
    buffers = dict(student.named_buffers())
    logits, _ = functional_call(student, (params, constants or {}, buffers), (images,))
    return F.cross_entropy(logits, labels, reduction="none")


def trusted_alignment(
    student: Student,
    images: torch.Tensor,
    labels: torch.Tensor,
    trusted_images: torch.Tensor,
    trusted_labels: torch.Tensor,
    trusted_at: Parameters | None = None,
    moved: Collection[str] | None = None,
) -> torch.Tensor:
    """``∇ℓ_i(θ)·∇L(θ*)`` for every training image ``i``: the gradient of its loss at the Student's parameters ``θ``
    against the gradient of the mean trusted loss ``L`` at ``trusted_at`` (default ``θ``). Positive: a step on the
    sample lowers the trusted loss. ``moved`` names the parameters ``θ`` stands for (default: all of them, as
    ``trusted_at``'s keys must); the others stay at their values, so the trusted gradient's backward and the
    Jacobian-vector product's tangents stop at the first of them that is moved."""
    params, constants = parameters_split(student, moved)
    with student.frozen_batch_statistics():
        trusted_gradient = grad(lambda p: per_sample_losses(student, p, trusted_images, trusted_labels, constants).mean())(
            params if trusted_at is None else trusted_at
        )
        _, alignment = jvp(lambda p: per_sample_losses(student, p, images, labels, constants), (params,), (trusted_gradient,))
    return alignment
