"""What a Student's training produced, step by step: a :class:`CurriculumRecorder` turns the environment's steps
into a :class:`~experiments.records.student_run.StudentRun`.

The recorder is fed every environment step (the states the tutor acted on and the step's info) whatever drives the
environment: a heuristic's predict loop or a Stable-Baselines3 ``learn`` through a callback. It keeps small sums, never
per-sample logs, so a record stays a few kilobytes whatever the dataset size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score
from stable_baselines3.common.logger import Logger

from experiments.records.student_run import WEIGHT_BINS, EpochRecord, GroupTally, StudentRun
from tsrl_env import DeepfakeCurriculumEnv, TrainingListener
from tsrl_env.data import REAL_FAMILY
from tsrl_env.state import DEFAULT_STATE_COLUMNS, StateLayout, state_column_class

# Edges of the EMA-loss bins: fine where a binary classifier's losses crowd (below ln 2), coarse above.
EMA_LOSS_EDGES = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.5, 2.5, float("inf"))


def noise_detection_auroc(suspicion: np.ndarray, flipped: np.ndarray) -> float:
    """How well ``suspicion`` (higher = more likely a wrong label) separates flipped from clean samples: the area
    under the ROC curve, 0.5 for no separation, 1 for perfect. Samples with a NaN score (not visited) are left out;
    NaN when no flipped or no clean sample is left."""
    known = ~np.isnan(suspicion)
    labels = np.asarray(flipped, dtype=bool)[known]
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, suspicion[known]))


def state_column_suspicions(layout: StateLayout) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Each single state column read as a noise detector: a function of state rows whose value rises with suspicion.

    A high EMA loss, a low probability of the training label and a wrong prediction point at a wrong label; so does a
    low value of a column whose class says ``low_flags_noise``, and a high value of any other single column. For a
    counter the direction is not known in advance: it is read as "more events = more suspicious", and an AUROC below
    0.5 means the opposite direction separates.
    """
    suspicions: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    if "ema_loss" in layout.columns:
        suspicions["ema_loss"] = layout.ema_loss_of
    if "p_fake" in layout.columns and "correct" in layout.parts:
        suspicions["p_label"] = lambda states: -layout.p_label_of(states)
    if "correct" in layout.parts:
        suspicions["wrong"] = lambda states: (~layout.correct_of(states)).astype(np.float64)
    if "counters" in layout.columns:
        for name, column in layout.counters.items():
            suspicions[f"{name}_counter"] = lambda states, column=column: states[..., column].astype(np.float64)
    for name, where in layout.columns.items():
        if name in DEFAULT_STATE_COLUMNS or where.stop - where.start != 1:
            continue
        sign = -1.0 if getattr(state_column_class(name), "low_flags_noise", False) else 1.0
        suspicions[name] = lambda states, index=where.start, sign=sign: sign * states[..., index].astype(np.float64)
    return suspicions


class CurriculumRecorder(TrainingListener):
    """Turns the environment's steps into a :class:`StudentRun` and logs each finished epoch.

    Epoch scalars go to a Stable-Baselines3 ``Logger`` (TensorBoard, CSV, ...) under ``student/`` and ``tutor/``,
    with the number of training samples seen as the x-axis, the same axis SB3 uses for a tutor's own statistics.
    The recorder listens to ``env`` (its warm-up epochs happen inside ``reset``) and hands every finished epoch's
    record to ``on_epoch``, as the epoch ends.
    """

    def __init__(
        self,
        run: StudentRun,
        env: DeepfakeCurriculumEnv,
        logger: Logger | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> None:
        self.run = run
        self.env = env
        self.logger = logger
        self.on_epoch = on_epoch
        env.listeners.append(self)
        self.layout = env.state_layout
        train = env.dataset.splits["train"]
        # Tallies and noise detection count the data's own training samples only: trusted images a baseline joins to
        # training are not part of it, and the threshold samples it flips on purpose are not its label noise.
        self._own = env.trainer.own_training_size
        self._flipped = train.flipped.numpy().astype(np.int64)[: self._own]
        families = train.families.numpy()
        self._family_index = np.where(families == REAL_FAMILY, len(env.dataset.family_names), families)
        run.weight_by_ema_loss = GroupTally.empty(
            [f"{low:g}-{high:g}" for low, high in zip(EMA_LOSS_EDGES[:-1], EMA_LOSS_EDGES[1:], strict=True)]
        )
        run.weight_by_correct = GroupTally.empty(["wrong", "right"])
        run.weight_by_label_noise = GroupTally.empty(["clean", "flipped"])
        run.weight_by_family = GroupTally.empty([*env.dataset.family_names, "real"])
        # An environment that skips the reward's passes pays NaN: no reward tally then, and NaN epoch means.
        run.reward_by_label_noise = GroupTally.empty(["clean", "flipped"]) if env.compute_rewards else None
        self._suspicions = state_column_suspicions(self.layout)
        self._weight_sums = np.zeros(self._own)
        self._visits = np.zeros(self._own, dtype=np.int64)
        self._samples_seen = 0
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self._weights: list[float] = []
        self._rewards: list[float] = []
        self._losses: list[float] = []
        self._histogram = np.zeros(WEIGHT_BINS, dtype=np.int64)
        # One value per training sample and epoch (each sample is visited at most once an epoch); NaN = not visited.
        self._epoch_scores = {name: np.full(len(self._flipped), np.nan) for name in ("weight", *self._suspicions)}

    def batch_trained(self, samples: int) -> None:
        """The environment trained the Student on ``samples`` more (the x-axis of the logs)."""
        self._samples_seen += samples

    def warmup_epoch_ended(self, epoch: int, val: dict[str, Any]) -> None:
        """Record a uniform-weight warm-up epoch that ``reset`` ran."""
        self._finish(EpochRecord(len(self.run.epochs) + 1, "warm-up", val["auc"], 1.0, float("nan"), float("nan"), []))

    def step(self, states: np.ndarray, info: dict[str, Any]) -> None:
        """Record one environment step: ``states`` are the rows the weights were chosen from."""
        weights = info["weights"]
        ids = info["sample_ids"]
        self._weights.append(float(weights.mean()))
        self._rewards.append(float(np.mean(info["sample_rewards"])))
        self._losses.append(info["loss"])
        self._histogram += np.histogram(weights, bins=WEIGHT_BINS, range=(0.0, 1.0))[0]
        # Tallies by a state column only where the Student's state has it (their groups stay empty otherwise).
        if "ema_loss" in self.layout.columns:
            ema_bin = np.digitize(self.layout.ema_loss_of(states), EMA_LOSS_EDGES[1:-1])
            self.run.weight_by_ema_loss.add(ema_bin, weights)
        if "correct" in self.layout.parts:
            self.run.weight_by_correct.add(self.layout.correct_of(states).astype(np.int64), weights)
        own = ids < self._own
        ids, weights, rewards, states = ids[own], weights[own], np.asarray(info["sample_rewards"])[own], states[own]
        self.run.weight_by_label_noise.add(self._flipped[ids], weights)
        self.run.weight_by_family.add(self._family_index[ids], weights)
        if self.run.reward_by_label_noise is not None:
            self.run.reward_by_label_noise.add(self._flipped[ids], rewards)
        self._epoch_scores["weight"][ids] = 1.0 - weights
        for name, suspicion in self._suspicions.items():
            self._epoch_scores[name][ids] = suspicion(states)
        self._weight_sums[ids] += weights
        self._visits[ids] += 1
        if "val" in info:
            aurocs = {name: noise_detection_auroc(scores, self._flipped) for name, scores in self._epoch_scores.items()}
            noise_auroc = aurocs.pop("weight")
            self._finish(
                EpochRecord(
                    len(self.run.epochs) + 1,
                    "tutored",
                    info["val"]["auc"],
                    float(np.mean(self._weights)),
                    float(np.mean(self._rewards)),
                    float(np.mean(self._losses)),
                    self._histogram.tolist(),
                    noise_auroc,
                    aurocs,
                )
            )
            self._reset_epoch()
            visited = self._visits > 0
            mean_weight = np.divide(self._weight_sums, self._visits, out=np.full(len(visited), np.nan), where=visited)
            self.run.noise_auroc = noise_detection_auroc(1.0 - mean_weight, self._flipped)
        if "test" in info:
            self.run.test = info["test"]
            self._log_test(info["test"])

    def state_dict(self) -> dict[str, Any]:
        """The run so far, for a checkpoint; only between epochs, where no epoch is half recorded."""
        if self._weights:
            raise RuntimeError("a recorder's state is taken between epochs; this epoch has recorded steps already")
        return {
            "run": asdict(self.run),
            "samples_seen": self._samples_seen,
            "weight_sums": self._weight_sums.copy(),
            "visits": self._visits.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run = StudentRun.from_dict(state["run"])
        self._samples_seen = int(state["samples_seen"])
        self._weight_sums = np.asarray(state["weight_sums"], dtype=np.float64).copy()
        self._visits = np.asarray(state["visits"], dtype=np.int64).copy()
        self._reset_epoch()

    def _finish(self, record: EpochRecord) -> None:
        self.run.epochs.append(record)
        if self.on_epoch is not None:
            self.on_epoch(record)
        if self.logger is None:
            return
        self.logger.record("student/epoch", record.epoch)
        self.logger.record("student/val_auc", record.val_auc)
        self.logger.record("tutor/mean_weight", record.mean_weight)
        if record.phase == "tutored":
            self.logger.record("student/train_loss", record.student_loss)
            if not math.isnan(record.mean_reward):
                self.logger.record("tutor/mean_reward", record.mean_reward)
            if not math.isnan(record.noise_auroc):
                self.logger.record("tutor/noise_auroc", record.noise_auroc)
        self.logger.dump(self._samples_seen)

    def _log_test(self, test: dict[str, dict[str, Any]]) -> None:
        """Every test split's metrics under ``test/<split>/``, named as the data source names its splits."""
        if self.logger is None:
            return
        for split, metrics in test.items():
            for name, value in metrics.items():
                if name == "family_auc":
                    for family, auc in value.items():
                        self.logger.record(f"test/{split}/auc_{family}", auc)
                else:
                    self.logger.record(f"test/{split}/{name}", value)
        self.logger.dump(self._samples_seen)
