"""The domain-generalisation rules: family balance and hard reals, on the batch awaiting weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import make_tutor
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv
from tsrl_env.data.base import REAL_FAMILY


@pytest.fixture(scope="module")
def clean_env() -> DeepfakeCurriculumEnv:
    options = {**TINY_SETTINGS["dataset_options"], "label_noise": 0.0}
    return DeepfakeCurriculumEnv(**{**TINY_SETTINGS, "dataset_options": options, "warmup_epochs": 0})


def test_family_balance_gives_every_family_and_the_reals_equal_total_weight(clean_env):
    tutor = make_tutor("family_balance", clean_env)
    families = clean_env.splits["train"].families
    totals = {}
    for group in torch.unique(families).tolist():
        count = int((families == group).sum())
        totals[group] = tutor.group_weight[group] * count
    assert max(totals.values()) == pytest.approx(min(totals.values()))
    assert max(tutor.group_weight.values()) == 1.0
    states, _ = clean_env.reset(seed=0)
    weights = tutor.predict(states)[0].ravel()
    expected = [tutor.group_weight[int(f)] for f in families[clean_env.pending_batch.ids].tolist()]
    np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_hard_reals_weigh_down_the_easier_half_of_the_reals_only(clean_env):
    tutor = make_tutor("hard_reals", clean_env, easy_real_weight=0.25)
    states, _ = clean_env.reset(seed=0)
    weights = tutor.predict(states)[0].ravel()
    batch = clean_env.pending_batch
    real = (clean_env.splits["train"].families[batch.ids] == REAL_FAMILY).numpy()
    losses = batch.batch_losses.numpy()
    assert np.all(weights[~real] == 1.0)
    median = torch.tensor(losses[real]).median().item()  # torch's: the lower middle value of an even count
    np.testing.assert_array_equal(weights[real], np.where(losses[real] < median, 0.25, 1.0))
    assert 0 < (weights[real] == 0.25).sum() < real.sum()
    with pytest.raises(ValueError, match="easy_real_weight in"):
        make_tutor("hard_reals", clean_env, easy_real_weight=2.0)
