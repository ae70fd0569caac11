"""Per-sample tutor rewards from the Student's predictions before and after the weighted update (DESIGN §2).

Every function takes, for a batch, the probability of the true class before and after and the correctness before
and after, and returns one reward per sample, vectorised over the batch. For ``tsrl`` and ``tsrl_reference``,
"before" is the training forward the tutor's weights apply to and "after" a no-grad forward right after the
weighted update. ``next_visit`` (a variant, not the paper's reward) compares a sample's training forward at one
visit with its training forward at the next visit, one epoch later; :class:`NextVisitLedger` keeps what that needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

RewardFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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
    return _flip_reward(p_before, p_after, correct_before, correct_after, still_wrong_sign=1.0)


REWARDS: dict[str, RewardFunction] = {
    "tsrl": tsrl_reward,
    "tsrl_reference": tsrl_reference_reward,
    "next_visit": next_visit_reward,
}

NEXT_VISIT_REWARDS = frozenset({"next_visit"})
"""Rewards paid at a sample's next visit: the environment runs no forward pass after the update for them."""


def needs_after_update_pass(name: str) -> bool:
    """Whether the reward ``name`` compares predictions right after the weighted update (one extra no-grad forward)."""
    get_reward(name)
    return name not in NEXT_VISIT_REWARDS


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

    def __init__(
        self, num_samples: int, device: torch.device | str = "cpu", reward_function: RewardFunction = next_visit_reward
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        self.num_samples = num_samples
        self.reward_function = reward_function
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
        rewards = self.reward_function(self.p_true[ids], p_true, self.correct[ids], correct)
        rewards = torch.where(paid_transition != self.NO_TRANSITION, rewards, torch.zeros_like(rewards))
        self.p_true[ids] = p_true.to(self.p_true.dtype)
        self.correct[ids] = correct
        self.transition[ids] = transitions.to(torch.int64)
        self.weight[ids] = weights.to(self.weight.dtype)
        return rewards, paid_transition, paid_weight


def get_reward(name: str) -> RewardFunction:
    """The reward function registered as ``name``."""
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; accepted: {', '.join(REWARDS)}") from None
