"""Settings of the curriculum environment, validated before any work starts."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from tsrl_env.rewards import REWARDS
from tsrl_env.state import COUNTERS


def reject_unknown_keys(given: dict[str, Any], accepted: list[str], what: str) -> None:
    """Raise a TypeError naming each unknown key, with a did-you-mean and the accepted keys."""
    for key in given:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"unknown {what} {key!r}{hint}; accepted: {', '.join(accepted)}")


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines one curriculum episode (one Student trained from scratch).

    Attributes:
        dataset: data source name (see ``tsrl_env.data.DATASETS``); ``dataset_options`` go to its loader.
        backbone: timm model name of the Student; ``pretrained`` is False (offline), True or a checkpoint path.
        image_size: side of the square images fed to the Student; the dataset's own size when None.
        batch_size: samples per Student mini-batch, i.e. per environment step.
        epochs: tutored epochs per episode, after ``warmup_epochs`` epochs with uniform weights.
        reward: tutor reward name (see ``tsrl_env.rewards.REWARDS``): ``tsrl`` (default), ``tsrl_reference``, or
            ``next_visit``, a cheaper variant that is not the paper's reward (no forward after the update; each
            sample's reward arrives at its next visit, see ``DeepfakeCurriculumEnv``).
        state_feature_dim: width the Student features are projected to in the state; None keeps the backbone's.
        state_counters: which transition counters enter the state (see ``tsrl_env.state.COUNTERS``).
        ema_alpha: smoothing of each sample's EMA loss.
        lr, weight_decay: the Student's Adam optimiser.
        augment: random horizontal flips of training images.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        num_workers: DataLoader worker processes decoding frame files, for datasets that leave their images on
            disk (``deepfakebench``, ``folder``); 0 decodes in the env's own process. In-memory datasets ignore it.
        seed: seed of the first episode when ``reset`` is called without one.
    """

    dataset: str = "embedded"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    backbone: str = "regnetx_002"
    pretrained: bool | str = False
    image_size: int | None = None
    batch_size: int = 64
    epochs: int = 6
    warmup_epochs: int = 2
    reward: str = "tsrl"
    state_feature_dim: int | None = None
    state_counters: tuple[str, ...] = ("learned",)
    ema_alpha: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 0.0
    augment: bool = True
    device: str = "auto"
    num_workers: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        positive = {"batch_size": self.batch_size, "epochs": self.epochs}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_epochs", "num_workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 8):
            raise ValueError(f"image_size must be an integer of at least 8 or None, got {self.image_size!r}")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; accepted: {', '.join(REWARDS)}")
        unknown = [name for name in self.state_counters if name not in COUNTERS]
        if unknown:
            raise ValueError(f"unknown state counter(s) {unknown}; accepted: {', '.join(COUNTERS)}")
        if not 0.0 < self.ema_alpha <= 1.0:
            raise ValueError(f"ema_alpha must lie in (0, 1], got {self.ema_alpha}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be positive and weight_decay non-negative, got {self.lr}, {self.weight_decay}")
        object.__setattr__(self, "state_counters", tuple(self.state_counters))

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
