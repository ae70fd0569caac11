"""Per-sample tutor rewards from the Student's predictions before and after the weighted update (DESIGN §2).

Every function takes, for a batch, the probability of the true class before and after and the correctness before
and after, and returns one reward per sample, vectorised over the batch. For ``tsrl`` and ``tsrl_reference``,
"before" is the training forward the tutor's weights apply to and "after" a no-grad forward right after the
weighted update. ``next_visit`` (a variant, not the paper's reward) compares a sample's training forward at one
visit with its training forward at the next visit, one epoch later; :class:`NextVisitLedger` keeps what that needs.

``val_alignment`` (a variant, not the paper's reward) compares no predictions: it scores each sample's gradient on
the Student's linear head against the mean head gradient of a trusted batch of validation images, both from the network
whose training forward the weights apply to (:func:`val_alignment_reward`). Its function takes other arguments, so it is
registered in :data:`TRUSTED_BATCH_REWARDS`, not in :data:`REWARDS`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

RewardFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(p_before, p_after, correct_before, correct_after) -> rewards``."""
AlignmentRewardFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(errors, features, trusted_gradient, weights) -> rewards``, as :func:`val_alignment_reward`."""


def _flip_reward(
    p_before: torch.Tensor,
    p_after: torch.Tensor,
    correct_before: torch.Tensor,
    correct_after: torch.Tensor,
    still_wrong_sign: float,
) -> torch.Tensor:
    progress = 0.5 * (p_after - p_before)
    reward = torch.where(correct_after, progress, still_wrong_sign * progress)
    reward = torch.where(~correct_before & correct_after, torch.ones_like(reward), reward)
    return torch.where(correct_before & ~correct_after, -torch.ones_like(reward), reward)


def tsrl_reward(
    p_before: torch.Tensor, p_after: torch.Tensor, correct_before: torch.Tensor, correct_after: torch.Tensor
) -> torch.Tensor:
    """wrong→right +1, right→wrong −1, otherwise ``+0.5 * (p_after(y) − p_before(y))``.

    Progress on the true class is rewarded whether the sample is still wrong or already right.
    """
    return _flip_reward(p_before, p_after, correct_before, correct_after, still_wrong_sign=1.0)


def tsrl_reference_reward(
    p_before: torch.Tensor, p_after: torch.Tensor, correct_before: torch.Tensor, correct_after: torch.Tensor
) -> torch.Tensor:
    """As ``tsrl_reward`` but wrong→wrong gives ``−0.5 * (p_after(y) − p_before(y))``, the reference code's sign.

    That sign punishes progress on a still-wrong sample; it is kept to reproduce the reference implementation.
    """
    return _flip_reward(p_before, p_after, correct_before, correct_after, still_wrong_sign=-1.0)


def next_visit_reward(
    p_before: torch.Tensor, p_after: torch.Tensor, correct_before: torch.Tensor, correct_after: torch.Tensor
) -> torch.Tensor:
    """``tsrl_reward``'s branches between two consecutive visits of a sample: a variant, not the paper's reward.

    "Before" is the sample's training forward at the visit where the tutor gave it a weight, "after" its training
    forward at its next visit (the next epoch), so the comparison costs no extra forward pass. The change it
    measures includes every update between the two visits, not only the weighted one, and the reward arrives an
    epoch after the action it belongs to; see :class:`NextVisitLedger`.
    """
    return tsrl_reward(p_before, p_after, correct_before, correct_after)


def cross_entropy_errors(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``softmax(z) − onehot(y)``, the gradient of each sample's cross-entropy with respect to its logits ``z``."""
    return probabilities - F.one_hot(labels, probabilities.shape[1]).to(probabilities.dtype)


def head_gradient(errors: torch.Tensor, features: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """The mean over a batch of the per-sample cross-entropy gradients of a linear head, as one matrix.

    ``errors`` are :func:`cross_entropy_errors`, ``(batch, classes)``, and ``features`` the head's inputs,
    ``(batch, features)``. A sample's gradient with respect to the head's weight is ``e ⊗ f`` and with respect to its
    bias ``e``, so the result is ``(classes, features + 1)``, the bias's gradient in the last column, or
    ``(classes, features)`` for a head without bias.
    """
    inputs = _with_bias_input(features) if bias else features
    return errors.T @ inputs / len(errors)


def val_alignment_reward(
    errors: torch.Tensor, features: torch.Tensor, trusted_gradient: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``w_i · cos(g_i, G)``: how far the weighted gradient of sample ``i`` points down a trusted batch's loss.

    ``g_i`` is the gradient of sample ``i``'s cross-entropy with respect to the Student's linear head (weight and
    bias) at the training forward the tutor's weights ``w`` apply to; ``errors`` and ``features`` are that forward's
    ``softmax(z_i) − onehot(y_i)`` and head inputs. ``G`` (``trusted_gradient``) is :func:`head_gradient` of a batch of
    validation images, whose labels are taken as clean, forwarded by the same network. A variant, not the paper's
    reward.

    Derivation: the weighted update descends ``(1/B) Σ_i w_i ℓ_i``; a gradient step of size ``η`` moves the head by
    ``−(η/B) Σ_i w_i g_i``, which changes the trusted batch's loss, to first order, by ``−(η/B) Σ_i w_i <g_i, G>``.
    Sample ``i``'s part in the decrease is thus ``w_i <g_i, G>``. Up to ``−η/B``, ``<g_i, G>`` is the meta-gradient
    of the trusted loss with respect to ``w_i`` that Learning to Reweight (Ren et al., ICML 2018) computes, over the
    whole network, at every step and sets the weights from (its positive part, normalised). Divided by ``‖g_i‖ ‖G‖`` it
    becomes ``w_i cos(g_i, G)``, in [−1, 1] for ``w_i`` in [0, 1]: the sample's normalised first-order contribution
    to decreasing the trusted batch's loss. Here it is a reward, so the tutor learns a policy that acts on the state
    and carries to new Students instead of solving for the weights at every step; and it depends on the action, as a
    policy gradient needs (a weight of 0 earns 0 whatever the sample). It is first order, ignores the backbone's
    gradient, and treats the optimiser as plain gradient descent (Adam rescales each coordinate).

    For a linear head ``g_i = e_i ⊗ [f_i; 1]``, so ``<g_i, G>_F = e_iᵀ G [f_i; 1]`` and ``‖g_i‖ = ‖e_i‖ ‖[f_i; 1]‖``:
    the whole batch takes a matrix product and row norms, with no autograd and no per-sample loop. A head without
    bias is recognised by ``trusted_gradient`` having ``features`` columns rather than ``features + 1``. A sample or
    a trusted batch with a zero gradient gets 0.
    """
    width = features.shape[1]
    if trusted_gradient.shape[1] not in (width, width + 1):
        raise ValueError(
            f"trusted_gradient must have {width + 1} columns (the head's weight and bias gradients) or {width} (no bias) "
            f"for {width} features, got shape {tuple(trusted_gradient.shape)}; build it with head_gradient"
        )
    inputs = _with_bias_input(features) if trusted_gradient.shape[1] == width + 1 else features
    dots = ((errors @ trusted_gradient) * inputs).sum(dim=1)
    norms = errors.norm(dim=1) * inputs.norm(dim=1) * trusted_gradient.norm()
    # A zero norm comes with a zero dot product: reward 0. Rounding can push |cos| a hair past 1.
    cosines = (dots / norms.clamp_min(torch.finfo(norms.dtype).tiny)).clamp(-1.0, 1.0)
    return weights * cosines


def _with_bias_input(features: torch.Tensor) -> torch.Tensor:
    """``[f; 1]`` per row: the bias is a weight on a constant input."""
    return torch.cat([features, features.new_ones(len(features), 1)], dim=1)


REWARDS: dict[str, RewardFunction] = {
    "tsrl": tsrl_reward,
    "tsrl_reference": tsrl_reference_reward,
    "next_visit": next_visit_reward,
}
"""Rewards that compare a sample's predictions before and after; each takes ``RewardFunction``'s arguments."""

TRUSTED_BATCH_REWARDS: dict[str, AlignmentRewardFunction] = {"val_alignment": val_alignment_reward}
"""Rewards computed before the update against a trusted validation batch, with ``AlignmentRewardFunction``'s arguments."""

REWARD_NAMES: tuple[str, ...] = (*REWARDS, *TRUSTED_BATCH_REWARDS)
"""Every reward the environment accepts."""

NEXT_VISIT_REWARDS = frozenset({"next_visit"})
"""Rewards paid at a sample's next visit: the environment runs no forward pass after the update for them."""


def needs_after_update_pass(name: str) -> bool:
    """Whether the reward ``name`` compares predictions right after the weighted update (one extra no-grad forward)."""
    get_reward(name)
    return name not in NEXT_VISIT_REWARDS and name not in TRUSTED_BATCH_REWARDS


def needs_trusted_batch(name: str) -> bool:
    """Whether the reward ``name`` needs a trusted validation batch forwarded before each weighted update."""
    get_reward(name)
    return name in TRUSTED_BATCH_REWARDS


class NextVisitLedger:
    """What the ``next_visit`` reward remembers of each training sample between two visits, as tensors by sample id.

    At every tutored visit of a sample, :meth:`visit` pays the reward of the transition from the sample's previous
    tutored visit (where the tutor chose its last weight) to this one, then records this visit as the start of the
    next transition. A sample with no earlier tutored visit (the first tutored epoch, whose previous visits were
    warm-up visits with weight 1, chosen by nobody) gets reward 0 and no transition. The actions of the last epoch
    of an episode are never paid: the episode ends before their samples come back.

    Per sample it holds the probability of the true class and the correctness at the last tutored visit, the index
    of the transition (action) taken there, and the weight given: 17 bytes, whatever the state width.
    """

    NO_TRANSITION = -1

    def __init__(self, num_samples: int, device: torch.device | str = "cpu") -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        self.num_samples = num_samples
        self.p_true = torch.zeros(num_samples, device=device)
        self.correct = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.transition = torch.full((num_samples,), self.NO_TRANSITION, dtype=torch.int64, device=device)
        self.weight = torch.full((num_samples,), float("nan"), device=device)

    def visit(
        self,
        ids: torch.Tensor,
        p_true: torch.Tensor,
        correct: torch.Tensor,
        weights: torch.Tensor,
        transitions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pay the samples ``ids`` for their previous transition, then record this visit as the next one's start.

        ``p_true`` and ``correct`` are this visit's training-forward predictions, ``weights`` the tutor's weights for
        it and ``transitions`` the index this visit's action gets (unique per transition, non-negative). ``ids`` must
        be distinct. Returns the rewards, and for each the index and weight of the earlier action it belongs to
        (``NO_TRANSITION`` and NaN, with reward 0, where there is none).
        """
        paid_transition = self.transition[ids]
        paid_weight = self.weight[ids]
        rewards = next_visit_reward(self.p_true[ids], p_true, self.correct[ids], correct)
        rewards = torch.where(paid_transition != self.NO_TRANSITION, rewards, torch.zeros_like(rewards))
        self.p_true[ids] = p_true.to(self.p_true.dtype)
        self.correct[ids] = correct
        self.transition[ids] = transitions.to(torch.int64)
        self.weight[ids] = weights.to(self.weight.dtype)
        return rewards, paid_transition, paid_weight

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).clone() for name in ("p_true", "correct", "transition", "weight")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            getattr(self, name).copy_(value)


def get_reward(name: str) -> RewardFunction | AlignmentRewardFunction:
    """The reward function registered as ``name``, from :data:`REWARDS` or :data:`TRUSTED_BATCH_REWARDS`.

    The two registries' functions take different arguments; :func:`needs_trusted_batch` tells which one ``name`` is in.
    """
    if name in TRUSTED_BATCH_REWARDS:
        return TRUSTED_BATCH_REWARDS[name]
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; accepted: {', '.join(REWARD_NAMES)}") from None
