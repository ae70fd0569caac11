"""The dataset every data source produces, and the checks the environment relies on.

A split's images are either an in-memory uint8 tensor (the embedded benchmark) or a :class:`FrameStore`, frame files
decoded and resized on demand (real data, which does not fit in memory). Everything else about a split (labels,
videos, families) is a small in-memory tensor either way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from tsrl_env.validation import image_size_setting

REAL_FAMILY = -1

# What PIL raises on a missing, truncated or malformed image file (some of its format plugins raise SyntaxError).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

MIN_FRAME_SIZE = 16
"""The smallest frame side a file may have: a smaller frame, upscaled to the Student's input, is a flat image."""

# PIL's modes of 16-bit grayscale (PNG); PIL's own conversion to RGB clips their values at 255, i.e. to white.
_SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def decode_frame(path: str) -> Image.Image:
    """The image file at ``path`` decoded whole, as 8-bit RGB: 16-bit grayscale scaled to 8 bits, a palette or a
    grayscale image expanded, an alpha channel dropped."""
    with Image.open(path) as image:
        if image.mode in _SIXTEEN_BIT_GRAY:
            eight_bit = np.round(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
            return Image.fromarray(eight_bit, "L").convert("RGB")
        return image.convert("RGB")


class FrameStore(torch.utils.data.Dataset):
    """Image files read lazily: item ``i`` is file ``i`` decoded to RGB and resized to ``image_size`` squared.

    It is a map-style ``torch.utils.data.Dataset`` of uint8 ``(3, image_size, image_size)`` tensors, so a
    ``DataLoader`` with worker processes can decode frames in parallel. Sources check every file when they build the
    store (see ``tsrl_env.data.frames.check_frames``); a file that fails to decode later changed on disk since, and
    raises an ``OSError`` naming it rather than yielding a made-up image.
    """

    def __init__(self, paths: Sequence[str] | np.ndarray, image_size: int) -> None:
        image_size_setting(image_size)
        # Bytes in one numpy array rather than a list of str: DataLoader workers then share the pages instead of
        # copying them as reference counts change (https://github.com/pytorch/pytorch/issues/13246).
        self._paths = paths if isinstance(paths, np.ndarray) else np.array([os.fsencode(path) for path in paths], dtype=bytes)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, index: int) -> str:
        """The file behind item ``index``."""
        return os.fsdecode(self._paths[index])

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.path(index)
        try:
            rgb = decode_frame(path)
        except DECODE_ERRORS as error:
            raise OSError(
                f"cannot decode frame {path} ({error}); it passed the check when the dataset was built, so it changed "
                "on disk since: restore it, or rebuild the dataset (with on_bad_frames='skip' to drop such frames)"
            ) from error
        if rgb.size != (self.image_size, self.image_size):
            # Bilinear with a support widened when shrinking, i.e. antialiased, as the env resizes in-memory images.
            rgb = rgb.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(rgb).transpose(2, 0, 1).copy())

    def resized(self, image_size: int) -> FrameStore:
        """The same files, decoded at another size."""
        return FrameStore(self._paths, image_size)


@dataclass(frozen=True)
class Split:
    """One split of a dataset, indexed by sample position.

    ``images`` is a uint8 tensor ``(N, 3, H, W)`` held in memory, or a :class:`FrameStore` read lazily. ``labels``
    are the labels the Student trains on (after any label noise); ``clean_labels`` are the true ones, kept so that
    analyses can tell flipped samples from clean ones. ``groups`` is the "video" a frame belongs to (unique across
    all splits of a dataset), used for video-level metrics. ``families`` indexes ``Dataset.family_names``
    (``REAL_FAMILY`` for real images) and ``strengths`` is the manipulation strength in [0, 1] (1 = most visible
    trace, 0 for real images, NaN for fakes whose source does not know it).
    """

    images: torch.Tensor | FrameStore
    labels: torch.Tensor  # int64, (N,), 0 = real, 1 = fake
    clean_labels: torch.Tensor  # int64, (N,)
    groups: torch.Tensor  # int64, (N,)
    families: torch.Tensor  # int64, (N,)
    strengths: torch.Tensor  # float32, (N,)

    def __post_init__(self) -> None:
        if isinstance(self.images, torch.Tensor):
            if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
                raise ValueError(
                    f"images must be uint8 of shape (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
                )
        elif not isinstance(self.images, FrameStore):
            raise TypeError(f"images must be a uint8 tensor or a FrameStore, got {type(self.images).__name__}")
        n = len(self.images)
        for name in ("labels", "clean_labels", "groups", "families", "strengths"):
            value = getattr(self, name)
            if value.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {tuple(value.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def in_memory(self) -> bool:
        """True when the images are a tensor, False when they are read from files on demand."""
        return isinstance(self.images, torch.Tensor)

    @property
    def image_size(self) -> int:
        """Side of the square images this split yields."""
        return self.images.image_size if isinstance(self.images, FrameStore) else int(self.images.shape[-1])

    @property
    def flipped(self) -> torch.Tensor:
        """Boolean mask of samples whose training label differs from the true one."""
        return self.labels != self.clean_labels


@dataclass(frozen=True)
class Dataset:
    """A named set of splits: ``train`` and ``val`` always, plus one or more ``test_*`` splits.

    ``bad_frames`` counts, per split, the frames a source dropped because they were missing or unreadable (only
    when told to skip them; empty otherwise). ``knows_label_noise`` is True for a source that draws training-label
    noise itself (a ``label_noise`` option) and keeps the true labels (``Split.clean_labels``), at every rate: at 0 it
    knows that it flipped none. Files on disk carry one label each, so no source can tell a label the files got wrong
    from a right one; a source without the option (``folder``) knows nothing of its labels' noise.
    """

    name: str
    splits: dict[str, Split]
    family_names: tuple[str, ...]
    bad_frames: dict[str, int] = field(default_factory=dict)
    knows_label_noise: bool = False

    def __post_init__(self) -> None:
        missing = {"train", "val"} - set(self.splits)
        if missing:
            raise ValueError(f"dataset {self.name!r} lacks the split(s) {sorted(missing)}; it has {sorted(self.splits)}")
        if not any(name.startswith("test") for name in self.splits):
            raise ValueError(f"dataset {self.name!r} has no test split; it has {sorted(self.splits)}")

    @property
    def test_splits(self) -> list[str]:
        """The test splits in the order the source made them: DeepfakeBench's in its ``test_dataset`` order, so that
        tables give the in-domain dataset first when it is listed first."""
        return [name for name in self.splits if name.startswith("test")]

    @property
    def image_size(self) -> int:
        return self.splits["train"].image_size
