"""Detection metrics: frame- and video-level AUC, ACC, EER and AP, computed with scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score, roc_curve


def _both_classes(labels: np.ndarray) -> bool:
    return np.unique(labels).size == 2


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    """Error rate where the false positive rate equals the false negative rate."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    index = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[index] + fnr[index]) / 2.0)


def video_scores(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean score and label per group ("video"), as DeepfakeBench computes video-level AUC."""
    unique_groups, inverse = np.unique(groups, return_inverse=True)
    counts = np.bincount(inverse)
    mean_scores = np.bincount(inverse, weights=scores) / counts
    group_labels = np.rint(np.bincount(inverse, weights=labels) / counts).astype(int)
    return group_labels, mean_scores


def video_auc(video_labels: np.ndarray, video_mean_scores: np.ndarray) -> float:
    """AUC over videos of their mean scores; NaN when the videos hold one class only."""
    return float(roc_auc_score(video_labels, video_mean_scores)) if _both_classes(video_labels) else float("nan")


def detection_metrics(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    """AUC, ACC (threshold 0.5), EER and AP on frames, plus video AUC when ``groups`` is given.

    ``scores`` is the probability of "fake" (label 1). Metrics that need both classes are NaN when only one
    class is present.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    metrics = {"acc": float(accuracy_score(labels, scores >= 0.5))}
    nan = float("nan")
    if _both_classes(labels):
        metrics.update(
            auc=float(roc_auc_score(labels, scores)),
            eer=equal_error_rate(labels, scores),
            ap=float(average_precision_score(labels, scores)),
        )
    else:
        metrics.update(auc=nan, eer=nan, ap=nan)
    if groups is not None:
        metrics["video_auc"] = video_auc(*video_scores(labels, scores, np.asarray(groups)))
    return metrics


def per_family_auc(
    labels: np.ndarray, scores: np.ndarray, families: np.ndarray, family_names: tuple[str, ...]
) -> dict[str, float]:
    """AUC of each manipulation family's fakes against all real samples of the same split."""
    labels = np.asarray(labels)
    families = np.asarray(families)
    real = labels == 0
    result = {}
    for index, name in enumerate(family_names):
        fake = (families == index) & (labels == 1)
        if fake.any() and real.any():
            mask = real | fake
            result[name] = float(roc_auc_score(labels[mask], scores[mask]))
    return result
