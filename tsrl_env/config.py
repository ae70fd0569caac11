"""Settings of the curriculum environment, validated before any work starts (each check lives in
:mod:`tsrl_env.validation`; the names of rewards, state columns and data sources in their registries)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from tsrl_env.augment import DEEPFAKEBENCH
from tsrl_env.data import data_source
from tsrl_env.rewards import reward_class
from tsrl_env.state import COUNTERS, DEFAULT_STATE_COLUMNS, STATE_COLUMNS
from tsrl_env.student import available_devices
from tsrl_env.validation import (
    ema_alpha_setting,
    image_size_setting,
    integer_setting,
    lr_schedule_setting,
    names_setting,
    real_setting,
    reject_unknown_keys,
    shown,
)

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
AUTO_WORKERS = "auto"
MAX_AUTO_WORKERS = 8
"""More frame-decoding workers than this rarely help one Student: ``num_workers: auto`` stops there."""


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines one curriculum episode (one Student trained from scratch).

    Attributes:
        dataset: data source name (see ``tsrl_env.data.register_dataset``); ``dataset_options`` go to its loader.
        backbone: timm model name of the Student; ``pretrained`` is False (offline), True (timm's published weights,
            downloaded) or a file of weights; ``pretrained_file`` a local file of weights, timm's or DeepfakeBench's
            Xception (see :func:`tsrl_env.student.load_pretrained_file`), for machines without network access.
        image_size: side of the square images fed to the Student; the dataset's own size when None.
        batch_size: samples per Student mini-batch, i.e. per environment step.
        epochs: tutored epochs per episode, after ``warmup_epochs`` epochs with uniform weights.
        reward: tutor reward name (see ``tsrl_env.register_reward``): ``tsrl`` (default), ``tsrl_reference``,
            ``next_visit``, a cheaper variant that is not the paper's reward (no forward after the update; each
            sample's reward arrives at its next visit), ``val_alignment``, another variant: each sample's weighted
            head gradient against a trusted validation batch's, before the update, or ``counterfactual``: each
            sample's weight times its gradient's alignment with a trusted batch's over the whole Student (see
            :mod:`tsrl_env.rewards`).
        trusted_batch_size: validation images drawn at every step for ``reward="val_alignment"`` or
            ``"counterfactual"`` (ignored by the other rewards); at most the validation split's size, which the env
            checks once the data is loaded.
        state_columns: the columns of a state row, in order (see ``tsrl_env.register_state_column``); the default is
            the reference state ``features, ema_loss, counters, p_fake, correctness``.
        state_feature_dim: width the ``features`` column projects the Student features to; None keeps the backbone's.
        state_counters: which transition counters the ``counters`` column holds (see ``tsrl_env.state.COUNTERS``).
        ema_alpha: smoothing of each sample's EMA loss.
        lr, weight_decay: the Student's Adam optimiser.
        lr_schedule: None (a constant ``lr``, the default) or a step schedule ``{"step_epochs": n, "gamma": g}``: the
            learning rate of the Student's epoch ``e`` (counting from 0, warm-up epochs included) is
            ``lr * g ** (e // n)``. Checkpoints keep the epoch count, so a resume continues the schedule.
        augment: random horizontal flips of training images (``True``), none (``False``), or ``"deepfakebench"``:
            the flips plus DeepfakeBench's blur, brightness/contrast and JPEG augmentations, seeded per sample so that
            a resume sees the same images (see :mod:`tsrl_env.augment`).
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        precision: the Student's forward passes in float32 (None, the default, or ``"fp32"``), in ``"bf16"`` or
            ``"fp16"`` autocast (with loss scaling; CUDA only), or ``"auto"``: bf16 on CUDA where supported, else fp16
            on CUDA, float32 on the CPU. Losses, states and rewards are computed in float32 either way.
        num_workers: DataLoader worker processes decoding frame files, for datasets that leave their images on
            disk (``deepfakebench``, ``folder``); 0 decodes in the env's own process, ``"auto"`` uses the CPUs this
            process may run on less one, at most 8 (see :func:`worker_count`). In-memory datasets ignore it.
        seed: seed of the first episode when ``reset`` is called without one, and of the ``features`` column's
            projection (the same for every episode, so that a tutor sees the same state space across Students).
        train_on_trusted: the trusted split (``val``, clean) joins the training split, labels and all, in every epoch's
            order (the ``trusted_union`` baseline); the validation metrics are then not held out.
        threshold_share: the frames of this share of the trusted split's videos (a seeded choice, by ``seed``) leave it
            and join the training split with every label flipped: known-mislabelled threshold samples, whose
            training-split positions the trainer keeps in ``threshold_ids`` (the ``aum_filter`` baseline). 0, the
            default, moves none.
        frozen_backbone: only the Student's classifier (its final ``nn.Linear``) trains; the rest keeps its first
            weights (the pretrained ones, with ``pretrained`` or ``pretrained_file``) and stays in evaluation mode, so
            BatchNorm statistics never move either: linear probing (the ``probe`` baseline).

    A setting of the wrong type raises a TypeError, an out-of-range one a ValueError, each naming the setting and
    the value given; ``dataset_options`` are checked as the data source's loader would, without loading anything.
    """

    dataset: str = "embedded"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    backbone: str = "regnetx_002"
    pretrained: bool | str = False
    pretrained_file: str | None = None
    image_size: int | None = None
    batch_size: int = 64
    epochs: int = 6
    warmup_epochs: int = 2
    reward: str = "tsrl"
    trusted_batch_size: int = 32
    state_columns: tuple[str, ...] = DEFAULT_STATE_COLUMNS
    state_feature_dim: int | None = None
    state_counters: tuple[str, ...] = ("learned",)
    ema_alpha: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: dict[str, Any] | None = None
    augment: bool | str = True
    device: str = "auto"
    precision: str | None = None
    num_workers: int | str = 4
    seed: int = 0
    train_on_trusted: bool = False
    threshold_share: float = 0.0
    frozen_backbone: bool = False

    def __post_init__(self) -> None:
        for name in ("dataset", "backbone", "reward", "device"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {shown(getattr(self, name))}")
        if self.device != "auto":
            _torch_device(self.device)
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be none or one of {', '.join(PRECISIONS)}, got {shown(self.precision)}")
        if not isinstance(self.pretrained, (bool, str)):
            raise TypeError(f"pretrained must be True, False or a checkpoint path, got {shown(self.pretrained)}")
        if self.pretrained_file is not None and not isinstance(self.pretrained_file, str):
            raise TypeError(f"pretrained_file must be the path of a file of weights, got {shown(self.pretrained_file)}")
        if self.pretrained_file is not None and self.pretrained is not False:
            raise ValueError(
                f"pretrained ({self.pretrained!r}) and pretrained_file ({self.pretrained_file!r}) are both set; keep one "
                "(pretrained_file loads the local file, pretrained: true downloads timm's weights)"
            )
        if not isinstance(self.augment, bool) and self.augment != DEEPFAKEBENCH:
            raise TypeError(f"augment must be true, false or {DEEPFAKEBENCH}, got {shown(self.augment)}")
        integers = {"batch_size": 1, "epochs": 1, "warmup_epochs": 0, "trusted_batch_size": 1, "seed": 0}
        for name, minimum in integers.items():
            object.__setattr__(self, name, integer_setting(name, getattr(self, name), minimum))
        if isinstance(self.num_workers, str) and self.num_workers != AUTO_WORKERS:
            raise ValueError(f"num_workers must be a non-negative integer or {AUTO_WORKERS}, got {self.num_workers!r}")
        if self.num_workers != AUTO_WORKERS:
            object.__setattr__(self, "num_workers", integer_setting("num_workers", self.num_workers, 0))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", image_size_setting(self.image_size, or_none=True))
        if self.state_feature_dim is not None:
            object.__setattr__(self, "state_feature_dim", integer_setting("state_feature_dim", self.state_feature_dim, 1, True))
        for name in ("lr", "weight_decay"):
            object.__setattr__(self, name, real_setting(name, getattr(self, name)))
        object.__setattr__(self, "ema_alpha", ema_alpha_setting(self.ema_alpha))
        if self.lr_schedule is not None:
            object.__setattr__(self, "lr_schedule", lr_schedule_setting(self.lr_schedule))
        reward_class(self.reward)  # an unknown name raises, listing the registered ones
        columns = names_setting("state_columns", self.state_columns, STATE_COLUMNS, "state column")
        object.__setattr__(self, "state_columns", columns)
        object.__setattr__(self, "state_counters", names_setting("state_counters", self.state_counters, COUNTERS, "counter"))
        if self.lr <= 0:
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a non-negative number, got {self.weight_decay}")
        data_source(self.dataset).check(self.dataset, self.dataset_options)
        for name in ("train_on_trusted", "frozen_backbone"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false, got {shown(getattr(self, name))}")
        object.__setattr__(self, "threshold_share", real_setting("threshold_share", self.threshold_share))
        if not 0.0 <= self.threshold_share < 1.0:
            raise ValueError(f"threshold_share must lie in [0, 1) (a share of the validation videos), got {self.threshold_share}")

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> EnvConfig:
        """Build a config from keyword settings, rejecting unknown keys with a did-you-mean."""
        reject_unknown_keys(settings, [f.name for f in dataclasses.fields(cls)], "environment setting")
        return cls(**settings)

    def replace(self, **changes: Any) -> EnvConfig:
        reject_unknown_keys(changes, [f.name for f in dataclasses.fields(self)], "environment setting")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def placed_under_env(cls) -> dict[str, str]:
        """Where each environment setting belongs when a config file has it at its top level: for the error's hint."""
        return {f.name: "it is an environment setting, so indent it under env:" for f in dataclasses.fields(cls)}

    @property
    def pretrained_weights(self) -> bool | str:
        """Where the Student's first weights come from, as :meth:`tsrl_env.student.Student.from_timm` takes it."""
        return self.pretrained if self.pretrained_file is None else self.pretrained_file


def worker_count(num_workers: int | str) -> int:
    """The DataLoader workers of the ``num_workers`` setting: ``"auto"`` is the CPUs this process may run on less one
    (the env's own process needs one), at most :data:`MAX_AUTO_WORKERS`; a count is itself."""
    if num_workers != AUTO_WORKERS:
        return int(num_workers)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(max(cpus - 1, 0), MAX_AUTO_WORKERS)


def _torch_device(device: str) -> torch.device:
    """``device`` as a torch device; whether this machine has it is checked where the run starts."""
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device must be auto or a torch device such as cpu, cuda or cuda:1, got {device!r}; this machine has: "
            f"{', '.join(available_devices())}"
        ) from None
