"""The reward signal-to-noise study: its statistics, and that measuring leaves the Student as it would train."""

from __future__ import annotations

import numpy as np
import pytest

import agents
from experiments.analysis.statistics import GroupMoments
from experiments.studies.reward_snr import (
    FIGURES,
    SampleMeans,
    episode_row,
    exploring_episode,
    measure_student,
    report,
)
from tsrl_env import TINY_SETTINGS

TUTOR = "noise_mentor_v1_pretrained"


def test_moments_pool_to_the_gap_and_pooled_sd_of_the_values_themselves():
    rng = np.random.default_rng(0)
    values, flipped = rng.normal(size=200), rng.random(200) < 0.3
    halves = GroupMoments(), GroupMoments()
    halves[0].add(values[:120], flipped[:120])
    halves[1].add(values[120:], flipped[120:])
    signal = halves[0].merged(halves[1]).signal()
    clean, dirty = values[~flipped], values[flipped]
    pooled = np.sqrt(((len(clean) - 1) * clean.var(ddof=1) + (len(dirty) - 1) * dirty.var(ddof=1)) / (len(values) - 2))
    assert signal["gap"] == pytest.approx(clean.mean() - dirty.mean())
    assert signal["sd"] == pytest.approx(pooled) and signal["snr"] == pytest.approx(signal["gap"] / pooled)
    assert signal["gap_over_standard_error"] == pytest.approx(signal["gap"] / (pooled * np.sqrt(1 / len(clean) + 1 / len(dirty))))


def test_sample_means_average_each_samples_visits_before_the_groups():
    means = SampleMeans(4)
    means.add(np.array([0, 1, 0, 2]), np.array([1.0, 5.0, 3.0, 7.0]))
    moments = means.moments(np.array([False, True, False, True]))
    assert moments.counts == [2, 1] and moments.sums == [9.0, 5.0]


def test_the_episode_row_is_the_first_order_signal_to_noise_of_the_oracles_direction():
    # room 0.1, sd between draws 0.01 (draws 0.01 * sqrt(2) apart), sigma 0.2, distance 4: SNR 0.5, 16 episodes.
    gap = 0.01 * np.sqrt(2)
    student = {"trusted_auc": 0.8, "trusted_auc_second_draw": 0.8 + gap, "sigma": 0.2, "oracle_distance": 16.0}
    student["trusted_auc_oracle"] = 0.8 + gap / 2 + 0.1
    assert episode_row([student, dict(student)]) == ["+0.1000", "0.0100", "4.0", "0.5000", "16"]


@pytest.fixture(scope="module")
def noisy_env():
    options = {**TINY_SETTINGS["dataset_options"], "label_noise": 0.3}
    return agents.make_env_for(TUTOR, **{**TINY_SETTINGS, "dataset_options": options})


def test_measuring_the_rewards_leaves_the_student_as_an_unmeasured_episode_trains_it(noisy_env, one_torch_thread):
    tutor = agents.make_tutor(TUTOR, noisy_env)

    def policy(observation):
        return tutor.predict(observation, deterministic=True)[0]

    measured = exploring_episode(noisy_env, policy, seed=3, sigma=0.2, exploration_seed=11, measure=True)
    plain = exploring_episode(noisy_env, policy, seed=3, sigma=0.2, exploration_seed=11, measure=False)
    assert measured["trusted_auc"] == plain["trusted_auc"]
    assert measured["oracle_distance"] == plain["oracle_distance"] > 0
    visits = noisy_env.config.epochs * noisy_env.steps_per_epoch * noisy_env.batch_size
    for kind, names in FIGURES:
        for name in names:
            assert sum(measured["per_visit"][kind][name]["counts"]) == visits
            assert 0 < sum(measured["per_sample"][kind][name]["counts"]) <= len(noisy_env.splits["train"])
    # val_alignment's exact derivative is a cosine (0 where the weight was clipped).
    moments = GroupMoments(**measured["per_visit"]["exact"]["val_alignment"])
    assert all(abs(total) <= count for total, count in zip(moments.sums, moments.counts, strict=True))


def test_a_student_record_reports_every_reward_in_whole_table_rows(noisy_env, one_torch_thread):
    tutor = agents.make_tutor(TUTOR, noisy_env)
    record = measure_student(noisy_env, tutor, seed=4, sigma=0.2)
    assert 0.0 <= record["trusted_auc_oracle"] <= 1.0 and 0.0 <= record["trusted_auc_second_draw"] <= 1.0
    text = report([record, record], "python -m experiments.studies.reward_snr")
    tables = [line for line in text.splitlines() if line.startswith("| ")]
    for kind, names in FIGURES:
        for name in names:
            assert sum(line.startswith(f"| {name} | {kind} |") for line in tables) == 1
    header_cells = {line.count(" | ") for line in tables if line.startswith("| reward |")}
    assert {
        line.count(" | ") for line in tables if line.split(" | ")[0] in ("| tsrl", "| val_alignment", "| counterfactual")
    } == header_cells


def test_the_study_refuses_an_env_that_pays_another_reward(one_torch_thread):
    options = {**TINY_SETTINGS["dataset_options"], "label_noise": 0.3}
    env = agents.make_env_for(TUTOR, **{**TINY_SETTINGS, "dataset_options": options, "reward": "val_alignment"})
    with pytest.raises(ValueError, match="reward='tsrl'"):
        exploring_episode(env, lambda observation: np.ones(len(observation)), seed=0, sigma=0.2, exploration_seed=1, measure=True)
