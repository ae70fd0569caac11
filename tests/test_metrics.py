import math

import numpy as np
import pytest

from tsrl_env.metrics import detection_metrics, equal_error_rate, per_family_auc, video_scores


def test_perfect_and_inverted_scores():
    labels = np.array([0, 0, 1, 1])
    assert detection_metrics(labels, np.array([0.1, 0.2, 0.8, 0.9]))["auc"] == 1.0
    inverted = detection_metrics(labels, np.array([0.9, 0.8, 0.2, 0.1]))
    assert inverted["auc"] == 0.0
    assert inverted["acc"] == 0.0


def test_auc_on_a_hand_computed_case():
    # Pairs (fake, real) ranked correctly: (0.6>0.3), (0.6>0.5), (0.4>0.3), (0.4<0.5) -> 3/4
    metrics = detection_metrics(np.array([0, 0, 1, 1]), np.array([0.3, 0.5, 0.6, 0.4]))
    assert metrics["auc"] == pytest.approx(0.75)
    assert metrics["acc"] == pytest.approx(0.5)


def test_eer_is_zero_for_separable_scores_and_half_for_constant():
    labels = np.array([0, 0, 1, 1])
    assert equal_error_rate(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert equal_error_rate(labels, np.full(4, 0.5)) == pytest.approx(0.5)


def test_video_auc_averages_frames_per_group():
    labels = np.array([0, 0, 1, 1, 0, 0])
    scores = np.array([0.9, 0.1, 0.6, 0.6, 0.2, 0.2])
    groups = np.array([7, 7, 8, 8, 9, 9])
    video_labels, video_mean = video_scores(labels, scores, groups)
    assert video_labels.tolist() == [0, 1, 0]
    assert video_mean.tolist() == pytest.approx([0.5, 0.6, 0.2])
    assert detection_metrics(labels, scores, groups)["video_auc"] == 1.0


def test_single_class_gives_nan_not_an_error():
    metrics = detection_metrics(np.zeros(3), np.array([0.1, 0.2, 0.3]), np.array([0, 1, 2]))
    assert math.isnan(metrics["auc"]) and math.isnan(metrics["video_auc"])


def test_per_family_auc_pits_each_family_against_the_reals():
    labels = np.array([0, 0, 1, 1])
    families = np.array([-1, -1, 0, 1])
    scores = np.array([0.2, 0.4, 0.9, 0.3])
    assert per_family_auc(labels, scores, families, ("a", "b")) == {"a": 1.0, "b": 0.5}
