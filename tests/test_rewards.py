import math

import pytest
import torch

from tsrl_env.rewards import (
    REWARDS,
    NextVisitLedger,
    next_visit_reward,
    reward_class,
    tsrl_reference_reward,
    tsrl_reward,
)

# One sample per branch: wrong->right, right->wrong, right->right, wrong->wrong.
P_BEFORE = torch.tensor([0.4, 0.7, 0.6, 0.1])
P_AFTER = torch.tensor([0.8, 0.3, 0.9, 0.3])
CORRECT_BEFORE = torch.tensor([False, True, True, False])
CORRECT_AFTER = torch.tensor([True, False, True, False])


def test_tsrl_reward_branches():
    reward = tsrl_reward(P_BEFORE, P_AFTER, CORRECT_BEFORE, CORRECT_AFTER)
    assert reward.tolist() == pytest.approx([1.0, -1.0, 0.5 * 0.3, 0.5 * 0.2])


def test_reference_reward_punishes_progress_on_still_wrong_samples():
    reward = tsrl_reference_reward(P_BEFORE, P_AFTER, CORRECT_BEFORE, CORRECT_AFTER)
    assert reward.tolist() == pytest.approx([1.0, -1.0, 0.5 * 0.3, -0.5 * 0.2])


def test_right_to_right_regress_is_negative_in_both():
    for reward_fn in (tsrl_reward, tsrl_reference_reward, next_visit_reward):
        reward = reward_fn(torch.tensor([0.9]), torch.tensor([0.7]), torch.tensor([True]), torch.tensor([True]))
        assert reward.item() == pytest.approx(-0.1)


def test_unknown_reward_names_the_accepted_ones():
    with pytest.raises(ValueError, match="accepted: tsrl, tsrl_reference, next_visit, val_alignment"):
        reward_class("flip")


def test_next_visit_reward_has_tsrl_branches():
    reward = next_visit_reward(P_BEFORE, P_AFTER, CORRECT_BEFORE, CORRECT_AFTER)
    assert reward.tolist() == pytest.approx([1.0, -1.0, 0.5 * 0.3, 0.5 * 0.2])


def test_only_next_visit_pays_late():
    assert [name for name, cls in REWARDS.items() if cls.pays_late] == ["next_visit"]


def test_next_visit_ledger_pays_each_transition_at_the_next_visit():
    ledger = NextVisitLedger(5)

    def visit(ids, p, correct, weights, transitions):
        rewards, paid, paid_weights = ledger.visit(
            torch.tensor(ids), torch.tensor(p), torch.tensor(correct), torch.tensor(weights), torch.tensor(transitions)
        )
        return rewards.tolist(), paid.tolist(), paid_weights.tolist()

    # First tutored visits: no earlier action, nothing to pay.
    rewards, paid, paid_weights = visit([0, 1, 2], [0.4, 0.7, 0.6], [False, True, True], [0.1, 0.2, 0.3], [0, 1, 2])
    assert rewards == [0.0, 0.0, 0.0] and paid == [-1, -1, -1] and all(math.isnan(w) for w in paid_weights)

    # Sample 2 right->right (+0.5 * 0.3), sample 0 wrong->right (+1), sample 3 first seen (0).
    rewards, paid, paid_weights = visit([2, 0, 3], [0.9, 0.8, 0.5], [True, True, False], [0.5, 0.6, 0.7], [10, 11, 12])
    assert rewards == pytest.approx([0.15, 1.0, 0.0])
    assert paid == [2, 0, -1]
    assert paid_weights[:2] == pytest.approx([0.3, 0.1]) and math.isnan(paid_weights[2])

    # Sample 0 right->wrong (-1, for transition 11), sample 1 right->wrong (-1, transition 1, two visits back),
    # sample 3 wrong->wrong with less p_y (0.5 * -0.05, the consistent sign).
    rewards, paid, paid_weights = visit([0, 1, 3], [0.3, 0.2, 0.45], [False, False, False], [1.0, 1.0, 1.0], [20, 21, 22])
    assert rewards == pytest.approx([-1.0, -1.0, -0.025])
    assert paid == [11, 1, 12]
    assert paid_weights == pytest.approx([0.6, 0.2, 0.7])
    assert ledger.transition.tolist() == [20, 21, 10, 22, -1]


def test_next_visit_ledger_holds_a_few_bytes_per_sample():
    ledger = NextVisitLedger(1000)
    tensors = (ledger.p_true, ledger.correct, ledger.transition, ledger.weight)
    assert sum(t.element_size() * t.numel() for t in tensors) == 17 * 1000
