import pytest
import torch

from tsrl_env.rewards import REWARDS, get_reward, tsrl_reference_reward, tsrl_reward

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
    for reward_fn in REWARDS.values():
        reward = reward_fn(torch.tensor([0.9]), torch.tensor([0.7]), torch.tensor([True]), torch.tensor([True]))
        assert reward.item() == pytest.approx(-0.1)


def test_unknown_reward_names_the_accepted_ones():
    with pytest.raises(ValueError, match="accepted: tsrl, tsrl_reference"):
        get_reward("flip")
