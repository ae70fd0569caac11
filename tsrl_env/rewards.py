"""Per-sample tutor rewards from the Student's predictions before and after the weighted update (DESIGN §2).

Every function takes, for a batch, the probability of the true class before and after the update and the
correctness before and after, and returns one reward per sample, vectorised over the batch.
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


REWARDS: dict[str, RewardFunction] = {
    "tsrl": tsrl_reward,
    "tsrl_reference": tsrl_reference_reward,
}


def get_reward(name: str) -> RewardFunction:
    """The reward function registered as ``name``."""
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; accepted: {', '.join(REWARDS)}") from None
