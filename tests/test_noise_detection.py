import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from experiments.config import RunConfig
from experiments.records.recorder import noise_detection_auroc
from experiments.training.student import train_student
from tsrl_env import TINY_SETTINGS, EnvConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_auroc_of_a_hand_counted_case_and_scikit_learns():
    # Flipped scores 0.9 and 0.3 against clean 0.8 and 0.1: 3 of the 4 (flipped, clean) pairs are ordered right.
    suspicion = np.array([0.9, 0.8, 0.3, 0.1, np.nan])
    flipped = np.array([True, False, True, False, True])
    assert noise_detection_auroc(suspicion, flipped) == 0.75
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=200), rng.random(200) < 0.3
    scores[labels] += 0.5
    assert noise_detection_auroc(scores, labels) == roc_auc_score(labels, scores)
    assert math.isnan(noise_detection_auroc(np.ones(4), np.zeros(4, bool))), "no flipped sample: nothing to detect"


@pytest.fixture(scope="module")
def noisy_runs(tmp_path_factory):
    options = {**TINY_SETTINGS["dataset_options"], "label_noise": 0.3}
    env = EnvConfig.from_dict({**TINY_SETTINGS, "dataset_options": options})
    out = tmp_path_factory.mktemp("runs")
    return {
        tutor: train_student(RunConfig(env=env, tutor=tutor, seed=0), out, progress=False, save_student=False)
        for tutor in ("oracle", "uniform", "focal")
    }


def test_records_say_how_well_weights_and_state_columns_flag_wrong_labels(noisy_runs):
    oracle, uniform, focal = noisy_runs["oracle"], noisy_runs["uniform"], noisy_runs["focal"]
    tutored = [epoch for epoch in oracle.epochs if epoch.phase == "tutored"]
    assert len(tutored) == TINY_SETTINGS["epochs"]
    assert all(epoch.noise_auroc == 1.0 for epoch in tutored) and oracle.noise_auroc == 1.0
    assert all(epoch.noise_auroc == 0.5 for epoch in uniform.epochs if epoch.phase == "tutored") and uniform.noise_auroc == 0.5
    assert all(math.isnan(epoch.noise_auroc) for epoch in uniform.epochs if epoch.phase == "warm-up")
    for epoch in focal.epochs[-TINY_SETTINGS["epochs"] :]:
        assert set(epoch.state_column_auroc) == {"ema_loss", "p_label", "wrong", "learned_counter"}
        assert all(0.0 <= value <= 1.0 for value in epoch.state_column_auroc.values())
        assert 0.0 < epoch.noise_auroc < 1.0
    # Focal weighs a sample by (1 - p_label)^2, so its weights flag exactly as p_label's column does.
    assert focal.epochs[-1].noise_auroc == pytest.approx(1.0 - focal.epochs[-1].state_column_auroc["p_label"], abs=1e-9)
