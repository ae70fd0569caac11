import math

import pytest
import torch

from tsrl_env.state import SampleHistory, StateBuilder


def test_ema_starts_at_ln2_and_follows_alpha():
    history = SampleHistory(3, ema_alpha=0.1)
    assert torch.allclose(history.ema_loss, torch.full((3,), math.log(2)))
    history.observe(torch.tensor([0, 2]), torch.tensor([1.0, 0.0]), torch.tensor([True, True]))
    expected_0 = 0.9 * math.log(2) + 0.1 * 1.0
    expected_2 = 0.9 * math.log(2)
    assert history.ema_loss[0].item() == pytest.approx(expected_0)
    assert history.ema_loss[1].item() == pytest.approx(math.log(2))
    assert history.ema_loss[2].item() == pytest.approx(expected_2)
    history.observe(torch.tensor([0]), torch.tensor([3.0]), torch.tensor([True]))
    assert history.ema_loss[0].item() == pytest.approx(0.9 * expected_0 + 0.3)


def test_counters_follow_transitions_between_visits():
    history = SampleHistory(2)
    ids = torch.tensor([0, 1])
    sequence = [
        torch.tensor([False, True]),
        torch.tensor([True, True]),
        torch.tensor([False, False]),
        torch.tensor([True, False]),
        torch.tensor([True, True]),
    ]
    for correct in sequence:
        history.observe(ids, torch.zeros(2), correct)
    # sample 0: F T F T T -> first sight is no event; then wrong->right twice, right->wrong once
    assert history.forgotten.tolist()[0] == 1
    assert history.learned.tolist()[0] == 2
    # sample 1: T T F F T -> right->wrong once, wrong->right once
    assert history.forgotten.tolist()[1] == 1
    assert history.learned.tolist()[1] == 1
    assert history.visits.tolist() == [5, 5]
    assert history.last_correct.tolist() == [True, True]


def test_ids_outside_the_dataset_are_rejected():
    history = SampleHistory(4)
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        history.observe(torch.tensor([4]), torch.zeros(1), torch.tensor([True]))


def test_state_layout_matches_reference():
    history = SampleHistory(5)
    ids = torch.tensor([1, 3])
    history.observe(ids, torch.tensor([1.0, 1.0]), torch.tensor([True, True]))
    history.observe(ids, torch.tensor([2.0, 0.5]), torch.tensor([False, True]))
    builder = StateBuilder(backbone_features=4, counters=("learned", "forgotten"))
    features = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    state = builder.build(features, ids, history, p_fake=torch.tensor([0.2, 0.9]), correct=torch.tensor([False, True]))
    assert state.shape == (2, builder.state_dim) == (2, 4 + 1 + 2 + 1 + 2)
    assert torch.equal(state[:, :4], features)
    assert torch.allclose(state[:, 4], torch.tanh(history.ema_loss[ids]))
    assert torch.allclose(state[:, 5], torch.tanh(history.learned[ids].float() / 10))
    assert torch.allclose(state[:, 6], torch.tanh(history.forgotten[ids].float() / 10))
    assert state[:, 6].tolist() == pytest.approx([math.tanh(0.1), 0.0])
    assert state[:, 7].tolist() == pytest.approx([0.2, 0.9])
    assert state[:, 8:].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_projection_fixes_the_feature_width():
    history = SampleHistory(2)
    builder = StateBuilder(backbone_features=512, feature_dim=16, seed=3)
    state = builder.build(torch.randn(2, 512), torch.tensor([0, 1]), history, torch.rand(2), torch.tensor([True, False]))
    assert state.shape == (2, 16 + 5)
    again = StateBuilder(backbone_features=512, feature_dim=16, seed=3)
    assert torch.equal(builder.projection, again.projection)


def test_unknown_counter_is_rejected():
    with pytest.raises(ValueError, match="accepted: learned, forgotten"):
        StateBuilder(8, counters=("forgetting",))
