"""The in-memory dataset every data source produces, and the checks the environment relies on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

REAL_FAMILY = -1


@dataclass(frozen=True)
class Split:
    """One split of a dataset, held as tensors indexed by sample position.

    ``labels`` are the labels the Student trains on (after any label noise); ``clean_labels`` are the true ones,
    kept so that analyses can tell flipped samples from clean ones. ``groups`` is the "video" a frame belongs to
    (unique across all splits of a dataset), used for video-level metrics. ``families`` indexes
    ``Dataset.family_names`` (``REAL_FAMILY`` for real images) and ``strengths`` is the manipulation strength in
    [0, 1] (1 = most visible trace, 0 for real images).
    """

    images: torch.Tensor  # uint8, (N, 3, H, W)
    labels: torch.Tensor  # int64, (N,), 0 = real, 1 = fake
    clean_labels: torch.Tensor  # int64, (N,)
    groups: torch.Tensor  # int64, (N,)
    families: torch.Tensor  # int64, (N,)
    strengths: torch.Tensor  # float32, (N,)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 of shape (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        for name in ("labels", "clean_labels", "groups", "families", "strengths"):
            value = getattr(self, name)
            if value.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {tuple(value.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def flipped(self) -> torch.Tensor:
        """Boolean mask of samples whose training label differs from the true one."""
        return self.labels != self.clean_labels


@dataclass(frozen=True)
class Dataset:
    """A named set of splits: ``train`` and ``val`` always, plus one or more ``test_*`` splits."""

    name: str
    splits: dict[str, Split]
    family_names: tuple[str, ...]

    def __post_init__(self) -> None:
        missing = {"train", "val"} - set(self.splits)
        if missing:
            raise ValueError(f"dataset {self.name!r} lacks the split(s) {sorted(missing)}; it has {sorted(self.splits)}")
        if not any(name.startswith("test") for name in self.splits):
            raise ValueError(f"dataset {self.name!r} has no test split; it has {sorted(self.splits)}")

    @property
    def test_splits(self) -> list[str]:
        return sorted(name for name in self.splits if name.startswith("test"))

    @property
    def image_size(self) -> int:
        return int(self.splits["train"].images.shape[-1])
