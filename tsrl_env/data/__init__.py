"""Data sources. Each returns a :class:`~tsrl_env.data.base.Dataset` with ``train``, ``val`` and ``test_*`` splits.

``embedded`` generates the offline benchmark in memory; ``deepfakebench`` reads datasets preprocessed by
DeepfakeBench and ``folder`` plain image folders, both leaving the images on disk (a :class:`FrameStore`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tsrl_env.data.base import REAL_FAMILY, Dataset, FrameStore, Split
from tsrl_env.data.deepfakebench import DEEPFAKEBENCH_LABEL_DICT, DeepfakeBenchConfig, load_deepfakebench
from tsrl_env.data.embedded import EmbeddedConfig, load_embedded, save_family_grid
from tsrl_env.data.folder import FolderConfig, load_folder

DATASETS: dict[str, Callable[..., Dataset]] = {
    "embedded": load_embedded,
    "deepfakebench": load_deepfakebench,
    "folder": load_folder,
}


def make_dataset(name: str, **options: Any) -> Dataset:
    """Load the dataset registered as ``name`` with its source-specific ``options``."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}") from None
    return loader(**options)


__all__ = [
    "DATASETS",
    "DEEPFAKEBENCH_LABEL_DICT",
    "REAL_FAMILY",
    "Dataset",
    "DeepfakeBenchConfig",
    "EmbeddedConfig",
    "FolderConfig",
    "FrameStore",
    "Split",
    "load_deepfakebench",
    "load_embedded",
    "load_folder",
    "make_dataset",
    "save_family_grid",
]
