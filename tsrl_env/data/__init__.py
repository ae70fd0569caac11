"""Data sources. Each returns a :class:`~tsrl_env.data.base.Dataset` with ``train``, ``val`` and ``test_*`` splits.

``embedded`` generates the offline benchmark in memory; ``deepfakebench`` reads datasets preprocessed by
DeepfakeBench and ``folder`` plain image folders, both leaving the images on disk (a :class:`FrameStore`). The
embedded benchmark and DeepfakeBench data can flip training labels (``label_noise``), keeping the true ones. Each source
is registered once, as its loader and the dataclass of its options (:func:`register_dataset`), so that the env config
checks a source's options before any data is loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tsrl_env.data.base import REAL_FAMILY, Dataset, FrameStore, Split
from tsrl_env.data.deepfakebench import DEEPFAKEBENCH_LABEL_DICT, DeepfakeBenchConfig, load_deepfakebench
from tsrl_env.data.embedded import EmbeddedConfig, cache_key, load_embedded, save_family_grid
from tsrl_env.data.folder import FolderConfig, load_folder
from tsrl_env.data.label_noise import NOISE_MODELS, register_noise_model
from tsrl_env.validation import register, registered, reject_unknown_keys, shown


@dataclass(frozen=True)
class DataSource:
    """How to load one data source: ``loader(config=None, **options)``, and the dataclass of its options.

    ``options`` (a dataclass type) lets the env config check the options before loading anything; ``keywords`` are the
    loader's arguments other than those fields and ``config``. A source without ``options`` checks them when it loads.
    ``identity(**options)`` names the data the options yield where the options alone do not (a generator's version).
    """

    loader: Callable[..., Dataset]
    options: type | None = None
    keywords: tuple[str, ...] = ()
    identity: Callable[..., str] | None = None

    def check(self, name: str, options: Any) -> None:
        """Refuse options the loader would refuse, without loading any data."""
        if not isinstance(options, dict):
            raise TypeError(f"dataset_options must be a mapping of option names to values, got {shown(options)}")
        if self.options is None:
            return
        fields = [field.name for field in dataclasses.fields(self.options)]
        reject_unknown_keys(options, [*fields, "config", *self.keywords], f"{name} option")
        given = {key: value for key, value in options.items() if key in fields}
        base = options.get("config")
        if base is None:
            self.options(**given)
        else:
            dataclasses.replace(base, **given)

    def flips_labels(self, options: dict[str, Any]) -> bool:
        """Whether this source flips training labels itself under ``options``: its ``label_noise`` option, given or by
        default, is above 0."""
        return self.knows_flipped_labels() and options.get("label_noise", self._fields()["label_noise"].default) > 0

    def knows_flipped_labels(self) -> bool:
        """Whether this source's datasets know which training labels it flipped (``Dataset.knows_label_noise``), at
        every rate of its ``label_noise`` option, 0 included; a source without that option knows nothing of them."""
        return "label_noise" in self._fields()

    def _fields(self) -> dict[str, dataclasses.Field[Any]]:
        return {field.name: field for field in dataclasses.fields(self.options)} if self.options else {}


DATASETS: dict[str, DataSource] = {}
"""Every data source the env accepts in its ``dataset`` setting, by name."""


def register_dataset(
    name: str,
    loader: Callable[..., Dataset],
    options: type | None = None,
    keywords: tuple[str, ...] = (),
    identity: Callable[..., str] | None = None,
) -> None:
    """Make ``loader`` the data source ``name`` (see :class:`DataSource`), for the env setting ``dataset``."""
    register(DATASETS, name, DataSource(loader, options, tuple(keywords), identity), "dataset")


register_dataset("embedded", load_embedded, EmbeddedConfig, keywords=("cache_dir",), identity=cache_key)
register_dataset("deepfakebench", load_deepfakebench, DeepfakeBenchConfig)
register_dataset("folder", load_folder, FolderConfig)


def data_source(name: str) -> DataSource:
    """The data source registered as ``name``; an unknown name raises a ValueError listing the registered ones."""
    return registered(DATASETS, name, "dataset")


def dataset_identity(name: str, options: dict[str, Any]) -> str | None:
    """What names the data of source ``name`` under ``options`` beyond the options themselves (the embedded
    benchmark's cache key); None for a source whose options say it all (files on disk, named by their paths)."""
    source = data_source(name)
    return source.identity(**options) if source.identity is not None else None


def sources_that_know_their_flips() -> list[str]:
    """The registered data sources whose datasets know which training labels they flipped (what ``oracle`` reads)."""
    return [name for name, source in DATASETS.items() if source.knows_flipped_labels()]


def make_dataset(name: str, **options: Any) -> Dataset:
    """Load the dataset registered as ``name`` with its source-specific ``options``."""
    return data_source(name).loader(**options)


__all__ = [
    "DATASETS",
    "DEEPFAKEBENCH_LABEL_DICT",
    "REAL_FAMILY",
    "DataSource",
    "Dataset",
    "DeepfakeBenchConfig",
    "EmbeddedConfig",
    "FolderConfig",
    "FrameStore",
    "NOISE_MODELS",
    "Split",
    "data_source",
    "dataset_identity",
    "load_deepfakebench",
    "load_embedded",
    "load_folder",
    "make_dataset",
    "register_dataset",
    "register_noise_model",
    "save_family_grid",
    "sources_that_know_their_flips",
]
