"""Data sources. Each returns a :class:`~tsrl_env.data.base.Dataset` with ``train``, ``val`` and ``test_*`` splits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tsrl_env.data.base import REAL_FAMILY, Dataset, Split
from tsrl_env.data.embedded import EmbeddedConfig, load_embedded, save_family_grid

DATASETS: dict[str, Callable[..., Dataset]] = {
    "embedded": load_embedded,
}


def make_dataset(name: str, **options: Any) -> Dataset:
    """Load the dataset registered as ``name`` with its source-specific ``options``."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}") from None
    return loader(**options)


__all__ = ["DATASETS", "REAL_FAMILY", "Dataset", "EmbeddedConfig", "Split", "load_embedded", "make_dataset", "save_family_grid"]
