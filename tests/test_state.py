import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tsrl_env import EnvConfig
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


def _builder(features: int, **settings) -> StateBuilder:
    """The state builder of an env with ``settings`` whose Student has ``features`` features (all a builder reads)."""
    config = EnvConfig(**settings)
    trainer = SimpleNamespace(student=SimpleNamespace(num_features=features), device="cpu")
    return StateBuilder(config.state_columns, config, trainer)


def _batch(ids, features, p_fake, correct) -> SimpleNamespace:
    """What the state columns read of a training batch."""
    probabilities = torch.stack([1 - p_fake, p_fake], dim=1)
    return SimpleNamespace(row_ids=ids, features=features, probabilities=probabilities, correct=correct)


def test_state_layout_matches_reference():
    history = SampleHistory(5)
    ids = torch.tensor([1, 3])
    history.observe(ids, torch.tensor([1.0, 1.0]), torch.tensor([True, True]))
    history.observe(ids, torch.tensor([2.0, 0.5]), torch.tensor([False, True]))
    builder = _builder(4, state_counters=("learned", "forgotten"))
    features = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    state = builder.build(_batch(ids, features, torch.tensor([0.2, 0.9]), torch.tensor([False, True])), history)
    assert state.shape == (2, builder.state_dim) == (2, 4 + 1 + 2 + 1 + 2)
    assert torch.equal(state[:, :4], features)
    assert torch.allclose(state[:, 4], torch.tanh(history.ema_loss[ids]))
    assert torch.allclose(state[:, 5], torch.tanh(history.learned[ids].float() / 10))
    assert torch.allclose(state[:, 6], torch.tanh(history.forgotten[ids].float() / 10))
    assert state[:, 6].tolist() == pytest.approx([math.tanh(0.1), 0.0])
    assert state[:, 7].tolist() == pytest.approx([0.2, 0.9])
    assert state[:, 8:].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    layout = builder.layout
    assert (layout.ema_loss, layout.counters, layout.p_fake, layout.wrong, layout.correct) == (
        4,
        {"learned": 5, "forgotten": 6},
        7,
        8,
        9,
    )
    rows = state.numpy()
    np.testing.assert_array_equal(layout.values(rows, "features"), rows[:, :4])
    np.testing.assert_array_equal(layout.values(rows, "forgotten"), rows[:, 6])
    np.testing.assert_array_equal(layout.values(rows, "counters"), rows[:, 5:7])
    np.testing.assert_array_equal(layout.values(rows, "p_fake"), rows[:, 7])


def test_projection_fixes_the_feature_width():
    history = SampleHistory(2)
    builder = _builder(512, state_feature_dim=16, seed=3)
    batch = _batch(torch.tensor([0, 1]), torch.randn(2, 512), torch.rand(2), torch.tensor([True, False]))
    assert builder.build(batch, history).shape == (2, 16 + 5)
    again = _builder(512, state_feature_dim=16, seed=3)
    assert torch.equal(builder.columns["features"].projection, again.columns["features"].projection)


def test_columns_follow_the_configured_list_and_unknown_ones_are_refused():
    layout = _builder(4, state_columns=["correctness", "p_fake"]).layout
    assert layout.width == 3 and (layout.correct, layout.p_fake) == (1, 2)
    with pytest.raises(ValueError, match="the state has no column 'ema_loss'; its columns: correctness, p_fake, wrong, correct"):
        layout.ema_loss  # noqa: B018 -- the property raises
    with pytest.raises(ValueError, match="unknown state column\\(s\\) \\['loss'\\]; accepted: features, ema_loss"):
        EnvConfig(state_columns=["loss"])
    with pytest.raises(ValueError, match="unknown counter\\(s\\) \\['forgetting'\\]; accepted: learned, forgotten"):
        EnvConfig(state_counters=["forgetting"])
