"""Settings of the curriculum environment, validated before any work starts."""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from tsrl_env.rewards import REWARD_NAMES
from tsrl_env.state import COUNTERS


def reject_unknown_keys(given: dict[str, Any], accepted: list[str], what: str) -> None:
    """Raise a TypeError naming each unknown key, with a did-you-mean and the accepted keys."""
    for key in given:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"unknown {what} {key!r}{hint}; accepted: {', '.join(accepted)}")


def shown(value: Any) -> str:
    """A setting's value and its type, for error messages: ``'64' (str)``."""
    return f"{value!r} ({type(value).__name__})"


def integer_setting(name: str, value: Any, minimum: int, or_none: bool = False) -> int:
    """``value`` as an int: a TypeError unless it is an integer (a bool is not), a ValueError below ``minimum``."""
    wanted = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer of at least {minimum}")
    wanted += " or None" if or_none else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {wanted}, got {shown(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be {wanted}, got {value}")
    return int(value)


def real_setting(name: str, value: Any) -> float:
    """``value`` as a float: a TypeError unless it is a real number (a bool is not), a ValueError if NaN or infinite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = "; YAML reads numbers such as 1e-3 as text, write 0.001" if _is_number_text(value) else ""
        raise TypeError(f"{name} must be a number, got {shown(value)}{hint}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return float(value)


def _is_number_text(value: Any) -> bool:
    """Whether ``value`` is a number written as text (YAML 1.1 readers, PyYAML's included, leave ``1e-3`` a string)."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def setting_differences(saved: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """``"name: saved -> current"`` for every setting that differs between two nested settings mappings.

    Nested mappings are compared key by key under dotted names (``env.lr``, ``env.dataset_options.label_noise``);
    names in ``ignore`` are skipped, and a tuple equals the list with the same items (YAML and ``torch.save`` differ).
    """
    flat_saved, flat_current = _flattened(saved), _flattened(current)
    names = [name for name in dict.fromkeys([*flat_saved, *flat_current]) if name not in ignore]
    changed = [name for name in names if flat_saved.get(name) != flat_current.get(name)]
    return [f"{name}: {flat_saved.get(name)!r} -> {flat_current.get(name)!r}" for name in changed]


def _flattened(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flattened(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def check_dataset_options(dataset: str, options: Any) -> None:
    """Refuse an unknown data source, or options its loader would refuse, without loading any data."""
    # Imported here: the data sources import this module.
    from tsrl_env.data import DATASETS, DeepfakeBenchConfig, EmbeddedConfig, FolderConfig

    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; accepted: {', '.join(DATASETS)}")
    if not isinstance(options, dict):
        raise TypeError(f"dataset_options must be a mapping of option names to values, got {shown(options)}")
    settings = {"embedded": EmbeddedConfig, "deepfakebench": DeepfakeBenchConfig, "folder": FolderConfig}.get(dataset)
    if settings is None:
        return  # a source registered by the user: its loader checks its options
    fields = [field.name for field in dataclasses.fields(settings)]
    loader_keywords = ["config", "cache_dir"] if dataset == "embedded" else ["config"]
    reject_unknown_keys(options, fields + loader_keywords, f"{dataset} option")
    given = {key: value for key, value in options.items() if key in fields}
    base = options.get("config")
    if base is None:
        settings(**given)
    else:
        dataclasses.replace(base, **given)


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines one curriculum episode (one Student trained from scratch).

    Attributes:
        dataset: data source name (see ``tsrl_env.data.DATASETS``); ``dataset_options`` go to its loader.
        backbone: timm model name of the Student; ``pretrained`` is False (offline), True or a checkpoint path.
        image_size: side of the square images fed to the Student; the dataset's own size when None.
        batch_size: samples per Student mini-batch, i.e. per environment step.
        epochs: tutored epochs per episode, after ``warmup_epochs`` epochs with uniform weights.
        reward: tutor reward name (see ``tsrl_env.rewards.REWARD_NAMES``): ``tsrl`` (default), ``tsrl_reference``,
            ``next_visit``, a cheaper variant that is not the paper's reward (no forward after the update; each
            sample's reward arrives at its next visit, see ``DeepfakeCurriculumEnv``), or ``val_alignment``, another
            variant: each sample's weighted head gradient against a trusted validation batch's, before the update.
        trusted_batch_size: validation images drawn at every step for ``reward="val_alignment"`` (ignored by the
            other rewards); at most the validation split's size, which the env checks once the data is loaded.
        state_feature_dim: width the Student features are projected to in the state; None keeps the backbone's.
        state_counters: which transition counters enter the state (see ``tsrl_env.state.COUNTERS``).
        ema_alpha: smoothing of each sample's EMA loss.
        lr, weight_decay: the Student's Adam optimiser.
        augment: random horizontal flips of training images.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        num_workers: DataLoader worker processes decoding frame files, for datasets that leave their images on
            disk (``deepfakebench``, ``folder``); 0 decodes in the env's own process. In-memory datasets ignore it.
        seed: seed of the first episode when ``reset`` is called without one.

    A setting of the wrong type raises a TypeError, an out-of-range one a ValueError, each naming the setting and
    the value given; ``dataset_options`` are checked as the data source's loader would, without loading anything.
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
    trusted_batch_size: int = 32
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
        for name in ("dataset", "backbone", "reward", "device"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {shown(getattr(self, name))}")
        if not isinstance(self.pretrained, (bool, str)):
            raise TypeError(f"pretrained must be True, False or a checkpoint path, got {shown(self.pretrained)}")
        if not isinstance(self.augment, bool):
            raise TypeError(f"augment must be true or false, got {shown(self.augment)}")
        integers = {"batch_size": 1, "epochs": 1, "warmup_epochs": 0, "trusted_batch_size": 1, "num_workers": 0, "seed": 0}
        for name, minimum in integers.items():
            object.__setattr__(self, name, integer_setting(name, getattr(self, name), minimum))
        for name, minimum in (("image_size", 8), ("state_feature_dim", 1)):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, integer_setting(name, getattr(self, name), minimum, or_none=True))
        for name in ("ema_alpha", "lr", "weight_decay"):
            object.__setattr__(self, name, real_setting(name, getattr(self, name)))
        if self.reward not in REWARD_NAMES:
            raise ValueError(f"unknown reward {self.reward!r}; accepted: {', '.join(REWARD_NAMES)}")
        if isinstance(self.state_counters, str) or not isinstance(self.state_counters, (list, tuple)):
            accepted = ", ".join(COUNTERS)
            raise TypeError(f"state_counters must be a list of counter names ({accepted}), got {shown(self.state_counters)}")
        unknown = [name for name in self.state_counters if name not in COUNTERS]
        if unknown:
            raise ValueError(f"unknown state counter(s) {unknown}; accepted: {', '.join(COUNTERS)}")
        if not 0.0 < self.ema_alpha <= 1.0:
            raise ValueError(f"ema_alpha must lie in (0, 1], got {self.ema_alpha}")
        if self.lr <= 0:
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a non-negative number, got {self.weight_decay}")
        object.__setattr__(self, "state_counters", tuple(self.state_counters))
        check_dataset_options(self.dataset, self.dataset_options)

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
