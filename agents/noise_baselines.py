"""Baselines against label noise whose Student trains on other data, or otherwise, than every other tutor's.

Each is a :class:`~agents.heuristics.HeuristicTutor` with ``env_settings``: settings its Student is built with, which
``tsrl train`` and ``tsrl benchmark`` apply from its :class:`agents.TutorSpec` as they do a taught tutor's state
columns; its constructor refuses an environment built without them. ``kind`` is its kind in tables. All three use the
trusted split (``val``, clean in every source here: only training labels are flipped), the data ``l2rw``,
``meta_weight_net`` and the ``trusted_probe`` column trust. Small-loss selection (``small_loss``), which needs no such
setting, is with the fixed rules in :mod:`agents.heuristics`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler
from stable_baselines3.common.vec_env import VecEnv

from agents.heuristics import HeuristicTutor, Uniform, _env_attr, register_rule
from tsrl_env.state import DEFAULT_STATE_COLUMNS
from tsrl_env.student import FAKE_CLASS, Student
from tsrl_env.trainer import StudentTrainer

TRUSTED_SPLIT = "val"
PROBE_L2_GRID = np.logspace(-4, 4, 10)
"""Inverse L2 strengths (scikit-learn's ``C``) the probe's cross-validation chooses among: scikit-learn's default grid of
``LogisticRegressionCV``."""


@register_rule
class AumFilter(HeuristicTutor):
    """Area Under the Margin (Pleiss, Zhang, Elenberg & Weinberger, NeurIPS 2020): weight 0 for a sample whose AUM is
    below the ``percentile`` (99, the paper's) of the AUM of threshold samples, known-mislabelled samples trained
    alongside the others, else 1.

    The AUM is the ``area_under_margin`` state column: the sample's margin (its label's logit minus the other's) averaged
    over its training forwards, warm-up included. The paper makes threshold samples by giving ``N / (C + 1)`` samples a
    fake extra class. With two classes the nearest is a flipped label, and only a sample known to be clean is known to
    be mislabelled once flipped (a flipped noisy training label would be right), so the threshold samples are the frames
    of half the trusted split's videos (env setting ``threshold_share`` 0.5), which join the training split with
    flipped labels; the validation metrics use the other videos. Threshold samples train the Student in the warm-up,
    where every weight is 1, as in the paper's AUM run, and get weight 0 in every tutored epoch, as do the samples the
    filter flags.

    In the first tutored epoch every other sample gets weight 1 while the tutor reads each threshold sample's AUM as its
    batch comes; from the second on, the threshold is the percentile of the latest AUM of every threshold sample read
    (taken of the column's values, ``tanh(AUM / 4)``, which order samples as the AUM does). Unlike the paper: flipped
    binary labels instead of a fake class; threshold samples from the trusted split rather than the training split;
    one run, whose flagged samples stop counting as they are flagged, instead of an AUM run and a retraining from
    scratch without them; the AUM of the epochs so far instead of up to the first learning-rate drop.
    """

    name = "aum_filter"
    kind = "heuristic"
    defaults = {"percentile": 99.0}
    env_settings: ClassVar[dict[str, Any]] = {
        "threshold_share": 0.5,
        "state_columns": (*DEFAULT_STATE_COLUMNS, "area_under_margin"),
    }

    def __init__(self, env: gym.Env | VecEnv, seed: int | None = None, **params: float) -> None:
        super().__init__(env, seed, **params)
        if "area_under_margin" not in self.layout.columns:
            raise ValueError("the 'aum_filter' tutor reads the area_under_margin state column; add it to state_columns")
        trainer: StudentTrainer = _env_attr(env, "trainer")
        if not len(trainer.threshold_ids):
            raise ValueError("the 'aum_filter' tutor needs threshold samples; build its Student with threshold_share > 0")
        size = len(trainer.splits["train"])
        self._is_threshold = np.zeros(size, dtype=bool)
        self._is_threshold[trainer.threshold_ids.numpy()] = True
        self._threshold_aum = np.full(size, np.nan, dtype=np.float32)  # latest column value of each threshold sample read

    def _check_params(self) -> None:
        percentile = self.params["percentile"]
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"aum_filter percentile must lie in (0, 100] (Pleiss et al. take 99), got {percentile}")

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        ids = _env_attr(self.env, "batch_sample_ids")
        if len(ids) != len(states):
            raise ValueError(f"aum_filter weights the whole batch awaiting weights ({len(ids)} rows), got {len(states)} rows")
        aum = self.layout.values(states, "area_under_margin")
        threshold_rows = self._is_threshold[ids]
        self._threshold_aum[ids[threshold_rows]] = aum[threshold_rows]
        read = self._threshold_aum[self._is_threshold & ~np.isnan(self._threshold_aum)]
        kept = np.ones(len(states), dtype=bool)
        if progress > 0 and len(read):
            kept = aum >= np.percentile(read, self.params["percentile"])
        return (kept & ~threshold_rows).astype(np.float32)

    def rng_state(self) -> dict[str, Any]:
        return {"generator": super().rng_state(), "threshold_aum": self._threshold_aum.copy()}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        super().set_rng_state(state["generator"])
        self._threshold_aum = state["threshold_aum"].copy()


@register_rule
class TrustedUnion(Uniform):
    """Weight 1 on the training split joined with the trusted split (env setting ``train_on_trusted``): the simplest
    use of trusted clean data, which ``l2rw`` and ``meta_weight_net`` must beat to justify their meta-gradients.

    The trusted images are in every epoch's order with their own labels and weight 1, like every training sample; the
    validation metrics of this tutor's Student are therefore not held out (its test metrics are).
    """

    name = "trusted_union"
    kind = "trusted data"
    env_settings: ClassVar[dict[str, Any]] = {"train_on_trusted": True}

    def __init__(self, env: gym.Env | VecEnv, seed: int | None = None, **params: float) -> None:
        super().__init__(env, seed, **params)
        if not _env_attr(env, "config").train_on_trusted:
            raise ValueError("the 'trusted_union' tutor trains on the trusted split too; build its Student with train_on_trusted")


@register_rule
class LinearProbe(HeuristicTutor):
    """A linear probe for pretrained Students: logistic regression on the trusted split over the Student's frozen
    features, as its classifier, so that its test metrics are the probe's; weight 0 on every training sample.

    The Student is built with ``frozen_backbone`` (its pretrained weights and BatchNorm statistics never move), no
    warm-up, one tutored epoch and no weight decay, so that zero-weight updates leave its classifier as the probe wrote
    it: no noisy label ever reaches it. At the first batch of each new Student the tutor fits
    :func:`fit_linear_probe` to the evaluation-mode features of the trusted images (``folds``-fold cross-validation over
    their videos chooses the L2 strength) and writes it into the Student's classifier, the one tutor that sets Student
    weights. The probe is that of representation learning, an L2 logistic regression on frozen features with its
    strength chosen on held-out data (Kornblith, Shlens & Le, "Do Better ImageNet Models Transfer Better?", CVPR 2019);
    here it asks what the noisy training split adds to a pretrained Student and its trusted data at all. The validation
    metrics are then not held out.
    """

    name = "probe"
    kind = "trusted data"
    defaults = {"folds": 5.0}
    env_settings: ClassVar[dict[str, Any]] = {"frozen_backbone": True, "warmup_epochs": 0, "epochs": 1, "weight_decay": 0.0}

    def __init__(self, env: gym.Env | VecEnv, seed: int | None = None, **params: float) -> None:
        super().__init__(env, seed, **params)
        config = _env_attr(env, "config")
        if not config.frozen_backbone or config.weight_decay:
            raise ValueError("the 'probe' tutor needs a Student built with frozen_backbone and weight_decay 0 (its env_settings)")
        if config.pretrained_weights is False:
            raise ValueError("the 'probe' tutor reads a pretrained Student's features; set pretrained or pretrained_file")
        trainer: StudentTrainer = _env_attr(env, "trainer")
        if trainer.group.world_size > 1:
            raise ValueError("the 'probe' tutor writes the Student's classifier in one process; train it without a process group")
        self.trainer = trainer
        self._fitted: Student | None = None

    def _check_params(self) -> None:
        folds = self.params["folds"]
        if folds < 2 or folds != int(folds):
            raise ValueError(f"probe folds must be a whole number >= 2 (cross-validation over the trusted split), got {folds}")

    def weights(self, states: np.ndarray, progress: float) -> np.ndarray:
        if self._fitted is not self.trainer.student:
            self._fit(self.trainer.student)
        return np.zeros(len(states), np.float32)

    def _fit(self, student: Student) -> None:
        trusted = self.trainer.splits[TRUSTED_SPLIT]
        was_training = student.training
        student.eval()
        features = torch.cat(
            [
                self.trainer.frozen_forward(self.trainer.images_of(TRUSTED_SPLIT, chunk))[1].float().cpu()
                for chunk in torch.arange(len(trusted)).split(self.trainer.batch_size)
            ]
        )
        student.train(was_training)
        labels, videos = (trusted.labels == FAKE_CLASS).cpu().numpy(), trusted.groups.cpu().numpy()
        weight, bias = fit_linear_probe(features.numpy(), labels, videos, int(self.params["folds"]))
        head = student.classifier
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            head.weight[FAKE_CLASS] = torch.as_tensor(weight, dtype=head.weight.dtype, device=head.weight.device)
            head.bias[FAKE_CLASS] = bias
        self._fitted = student


def fit_linear_probe(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None, folds: int = 5
) -> tuple[np.ndarray, float]:
    """Weight and bias of the log-odds of ``labels`` (1 = fake) on raw ``features``: an L2 logistic regression on the
    standardised features, its strength chosen from :data:`PROBE_L2_GRID` by ``folds``-fold stratified cross-validated
    log loss and refitted on every sample, folded back to act on raw features. The log loss is a proper score; the AUC,
    blind to scale, would tie every strength that ranks alike, the strongest included, whose probabilities all sit near
    the base rate. ``groups`` (each sample's video; by default each its own) are kept within one fold, so that no frame
    is scored by a fit on its near-duplicate siblings. As a two-class classifier, logits ``(0, w·f + b)`` give the
    probe's probability of fake."""
    groups = np.arange(len(labels)) if groups is None else groups
    scaler = StandardScaler().fit(features)
    search = GridSearchCV(
        LogisticRegression(max_iter=1000), {"C": PROBE_L2_GRID}, cv=StratifiedGroupKFold(folds), scoring="neg_log_loss"
    ).fit(scaler.transform(features), labels, groups=groups)
    model = search.best_estimator_
    weight = model.coef_[0] / scaler.scale_
    return weight, float(model.intercept_[0] - weight @ scaler.mean_)


__all__ = ["AumFilter", "LinearProbe", "TrustedUnion", "fit_linear_probe"]
