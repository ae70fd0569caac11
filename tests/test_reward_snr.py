"""The reward signal-to-noise study: its statistics, and that measuring leaves the Student as it would train."""

from __future__ import annotations

import numpy as np
import pytest

import agents
from experiments.studies.reward_snr import (
    EXACT_DERIVATIVE,
    PER_SAMPLE_REWARDS,
    Moments,
    exploring_episode,
    measure_student,
    report,
)
from tsrl_env import TINY_SETTINGS

TUTOR = "noise_mentor_v1_pretrained"


def test_moments_pool_to_the_gap_and_pooled_sd_of_the_values_themselves():
    rng = np.random.default_rng(0)
    values, flipped = rng.normal(size=200), rng.random(200) < 0.3
    halves = Moments(), Moments()
    halves[0].add(values[:120], flipped[:120])
    halves[1].add(values[120:], flipped[120:])
    signal = halves[0].merged(halves[1]).signal()
    clean, dirty = values[~flipped], values[flipped]
    pooled = np.sqrt(((len(clean) - 1) * clean.var(ddof=1) + (len(dirty) - 1) * dirty.var(ddof=1)) / (len(values) - 2))
    assert signal["gap"] == pytest.approx(clean.mean() - dirty.mean())
    assert signal["sd"] == pytest.approx(pooled)
    assert signal["gap_over_standard_error"] == pytest.approx(signal["gap"] / (pooled * np.sqrt(1 / len(clean) + 1 / len(dirty))))
    assert signal["visits"] == 200


@pytest.fixture(scope="module")
def noisy_env():
    options = {**TINY_SETTINGS["dataset_options"], "label_noise": 0.3}
    return agents.make_env_for(TUTOR, **{**TINY_SETTINGS, "dataset_options": options})


def test_measuring_the_rewards_leaves_the_student_as_an_unmeasured_episode_trains_it(noisy_env, one_torch_thread):
    tutor = agents.make_tutor(TUTOR, noisy_env)
    measured = exploring_episode(noisy_env, tutor, seed=3, sigma=0.2, exploration_seed=11, measure=True)
    plain = exploring_episode(noisy_env, tutor, seed=3, sigma=0.2, exploration_seed=11, measure=False)
    assert measured["trusted_auc"] == plain["trusted_auc"]
    assert measured["oracle_distance"] == plain["oracle_distance"] > 0
    visits = noisy_env.config.epochs * noisy_env.steps_per_epoch * noisy_env.batch_size
    for name in PER_SAMPLE_REWARDS:
        assert sum(measured["sampled"][name]["counts"]) == visits
    # val_alignment's derivative is a cosine.
    moments = Moments(**measured["exact"]["val_alignment"])
    assert all(abs(total) <= count for total, count in zip(moments.sums, moments.counts, strict=True))


def test_a_student_record_reports_every_reward_and_the_episode_row(noisy_env, one_torch_thread):
    tutor = agents.make_tutor(TUTOR, noisy_env)
    record = measure_student(noisy_env, tutor, seed=4, sigma=0.2)
    assert 0.0 <= record["trusted_auc_oracle"] <= 1.0 and 0.0 <= record["trusted_auc_second_draw"] <= 1.0
    text = report([record], "python -m experiments.studies.reward_snr")
    for name in PER_SAMPLE_REWARDS:
        assert f"| {name} | sampled |" in text
    for name in EXACT_DERIVATIVE:
        assert f"| {name} | exact |" in text
    assert "episodes for 2 SE" in text
