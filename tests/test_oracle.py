import numpy as np
import pytest

from agents import make_tutor
from tsrl_env import TINY_SETTINGS, DeepfakeCurriculumEnv
from tsrl_env.data import Dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_oracle_gives_zero_exactly_to_flipped_labels_and_one_elsewhere():
    settings = {**TINY_SETTINGS, "dataset_options": {**TINY_SETTINGS["dataset_options"], "label_noise": 0.3}}
    env = DeepfakeCurriculumEnv(**settings)
    flipped = env.dataset.splits["train"].flipped.numpy()
    assert 0 < flipped.mean() < 0.6
    oracle = make_tutor("oracle", env)
    states, _ = env.reset(seed=0)
    seen_flipped = 0
    for _ in range(env.steps_per_epoch):
        ids = env.batch_sample_ids
        weights = oracle.predict(states)[0].reshape(-1)
        np.testing.assert_array_equal(weights, np.where(flipped[ids], 0.0, 1.0))
        seen_flipped += int(flipped[ids].sum())
        states, _, _, _, info = env.step(weights)
        np.testing.assert_array_equal(info["sample_ids"], ids)
    assert seen_flipped > 0


def test_oracle_never_reads_the_truth_from_the_observation():
    settings = {**TINY_SETTINGS, "dataset_options": {**TINY_SETTINGS["dataset_options"], "label_noise": 0.3}}
    env = DeepfakeCurriculumEnv(**settings)
    states, _ = env.reset(seed=0)
    oracle = make_tutor("oracle", env)
    blank = oracle.predict(np.zeros_like(states))[0]
    np.testing.assert_array_equal(blank, oracle.predict(states)[0])


def test_a_dataset_that_does_not_know_its_flips_refuses_the_oracle():
    env = DeepfakeCurriculumEnv(**TINY_SETTINGS)
    train = env.dataset.splits["train"]
    env.dataset = Dataset("my_folder", dict(env.dataset.splits), env.dataset.family_names)  # as a folder source builds it
    assert not env.dataset.knows_label_noise and env.dataset.splits["train"] is train
    with pytest.raises(ValueError, match="'oracle' tutor needs to know which training labels are wrong.*'my_folder'"):
        make_tutor("oracle", env)
