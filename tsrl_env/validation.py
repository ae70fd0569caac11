"""Checks of settings, each defined once: every config and loader of the project calls these.

This module imports nothing of the project, so that any module (the env config, the data sources, the state) can use
it without an import cycle. A value of the wrong type raises a TypeError, one out of range a ValueError; both name the
setting and the value given.
"""

from __future__ import annotations

import difflib
import math
import numbers
import warnings
from collections.abc import Iterable
from typing import Any, TypeVar

Entry = TypeVar("Entry")

MIN_IMAGE_SIZE = 8
"""The smallest image side a Student is fed (smaller images leave a backbone's strided stages with nothing)."""


def did_you_mean(name: Any, accepted: Iterable[str]) -> str:
    """`` (did you mean 'sac'?)`` for the accepted name closest to ``name``, or nothing when none is close."""
    close = difflib.get_close_matches(str(name).lower(), list(accepted), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def reject_unknown_keys(
    given: Iterable[str], accepted: list[str], what: str, belongs_elsewhere: dict[str, str] | None = None
) -> None:
    """Raise a TypeError naming the first unknown key, with a did-you-mean and the accepted keys; a key named in
    ``belongs_elsewhere`` is told where it belongs instead (``'lr' is an env setting: put it under env:``)."""
    for key in given:
        if key in accepted:
            continue
        if belongs_elsewhere and key in belongs_elsewhere:
            raise TypeError(f"{key!r} is not a {what}{did_you_mean(key, accepted)}: {belongs_elsewhere[key]}")
        raise TypeError(f"unknown {what} {key!r}{did_you_mean(key, accepted)}; accepted: {', '.join(accepted)}")


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


def image_size_setting(value: Any, name: str = "image_size", or_none: bool = False) -> int:
    """``value`` as an image side of at least :data:`MIN_IMAGE_SIZE` pixels."""
    return integer_setting(name, value, MIN_IMAGE_SIZE, or_none=or_none)


def real_setting(name: str, value: Any) -> float:
    """``value`` as a float: a TypeError unless it is a real number (a bool is not), a ValueError if NaN or infinite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = "; YAML reads numbers such as 1e-3 as text, write 0.001" if _is_number_text(value) else ""
        raise TypeError(f"{name} must be a number, got {shown(value)}{hint}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return float(value)


def lr_schedule_setting(value: Any) -> dict[str, Any]:
    """``value`` as a step schedule of the learning rate: ``{"step_epochs": n, "gamma": g}``, ``lr`` times ``g`` after
    every ``n`` epochs of the Student (warm-up included), ``g`` in (0, 1]."""
    if not isinstance(value, dict):
        raise TypeError(f"lr_schedule must be none or a mapping such as {{step_epochs: 10, gamma: 0.5}}, got {shown(value)}")
    reject_unknown_keys(value, ["step_epochs", "gamma"], "lr_schedule key")
    missing = sorted({"step_epochs", "gamma"} - set(value))
    if missing:
        raise ValueError(f"lr_schedule lacks {', '.join(missing)}; give both, e.g. {{step_epochs: 10, gamma: 0.5}}")
    gamma = real_setting("lr_schedule gamma", value["gamma"])
    if not 0 < gamma <= 1:
        raise ValueError(f"lr_schedule gamma must be in (0, 1], got {gamma}")
    return {"step_epochs": integer_setting("lr_schedule step_epochs", value["step_epochs"], 1), "gamma": gamma}


def ema_alpha_setting(value: Any) -> float:
    """``value`` as the smoothing factor of an exponential moving average, in (0, 1]."""
    alpha = real_setting("ema_alpha", value)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"ema_alpha must lie in (0, 1], got {alpha}")
    return alpha


def choice_setting(name: str, value: Any, accepted: Iterable[str]) -> str:
    """``value`` if it is one of ``accepted``, else a ValueError listing them."""
    accepted = list(accepted)
    if value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(accepted)}, got {value!r}")
    return value


def names_setting(name: str, value: Any, accepted: Iterable[str], what: str) -> tuple[str, ...]:
    """``value`` as a tuple of names, each one of ``accepted``: a TypeError unless a list or tuple, a ValueError naming
    the unknown ones (``what`` says what the names are: "state column", ...)."""
    accepted = list(accepted)
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of {what} names ({', '.join(accepted)}), got {shown(value)}")
    unknown = [item for item in value if item not in accepted]
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; accepted: {', '.join(accepted)}")
    return tuple(value)


def register(registry: dict[str, Entry], name: str, entry: Entry, what: str) -> None:
    """Put ``entry`` in ``registry`` as ``name``; another entry under that name is replaced with a warning, as
    Gymnasium does (a notebook cell run again redefines its class)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a {what} name must be a non-empty string, got {shown(name)}")
    if registry.get(name, entry) != entry:
        warnings.warn(f"{what} {name!r} was registered already; the new one replaces it", stacklevel=3)
    registry[name] = entry


def registered(registry: dict[str, Entry], name: Any, what: str) -> Entry:
    """The entry of ``registry`` named ``name``; an unknown name raises a ValueError listing the registered ones."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {what} {name!r}{did_you_mean(name, registry)}; accepted: {', '.join(registry)}") from None


ON_BAD_FRAMES = ("error", "skip")
"""What a frame-file source does with an unreadable frame: stop before training, or drop and count it."""


def on_bad_frames_setting(value: Any) -> str:
    return choice_setting("on_bad_frames", value, ON_BAD_FRAMES)


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


def _is_number_text(value: Any) -> bool:
    """Whether ``value`` is a number written as text (YAML 1.1 readers, PyYAML's included, leave ``1e-3`` a string)."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True
