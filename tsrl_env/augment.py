"""DeepfakeBench's training augmentations, seeded per sample so that a run and its resume see the same images.

``augment: deepfakebench`` adds to the random horizontal flip what DeepfakeBench's reference configuration applies to a
training frame: a Gaussian blur (probability 0.5, kernel 3, 5 or 7), brightness and contrast jitter of ±10% (0.5) and a
JPEG round trip at quality 40-100 (0.5). Not reproduced: its rotation (probability 0 in the reference), its isotropic
resize, and the FancyPCA and hue/saturation alternatives it draws instead of brightness/contrast now and then.

They come from ``torchvision.transforms.v2`` (the JPEG round trip from Pillow, torchvision's encoder being
deprecated): it is a dependency already, works on the uint8 tensors the data sources decode (no NumPy or PIL round
trip), and draws from torch's RNG only, which one ``torch.manual_seed`` per sample fixes exactly. Albumentations
would add a dependency and draw from NumPy's and Python's global RNGs. Each sample's seed is drawn at the epoch start
from the trainer's data generator (saved in every checkpoint) and indexed by sample id, so the images depend neither
on the DataLoader worker that decodes them nor on the number of workers.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset as TorchDataset
from torchvision.transforms import v2

DEEPFAKEBENCH = "deepfakebench"
"""The ``augment`` setting of DeepfakeBench's augmentations (``True`` is the horizontal flip alone)."""
SEED_BOUND = 2**62


def deepfakebench_transform() -> v2.Transform:
    """DeepfakeBench's photometric training augmentations on one uint8 ``(3, H, W)`` image (the flip is the trainer's)."""
    return v2.Compose(
        [
            v2.RandomApply([v2.RandomChoice([v2.GaussianBlur(kernel) for kernel in (3, 5, 7)])], p=0.5),
            v2.RandomApply([v2.ColorJitter(brightness=0.1, contrast=0.1)], p=0.5),
            v2.RandomApply([JpegRoundTrip(40, 100)], p=0.5),
        ]
    )


class JpegRoundTrip(nn.Module):
    """A JPEG encoding and decoding of a uint8 ``(3, H, W)`` image at a quality drawn from torch's RNG.

    Pillow's codec, not ``v2.JPEG``: torchvision 0.29 deprecated the image encoders ``v2.JPEG`` relies on.
    """

    def __init__(self, lowest: int, highest: int) -> None:
        super().__init__()
        self.lowest, self.highest = lowest, highest

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        quality = int(torch.randint(self.lowest, self.highest + 1, ()))
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(buffer).convert("RGB"))
        return torch.from_numpy(decoded.copy()).permute(2, 0, 1).contiguous()


def augmented(image: torch.Tensor, seed: int, transform: v2.Transform) -> torch.Tensor:
    """``transform`` of ``image`` with torch's RNG at ``seed``, the caller's RNG state left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


def augmented_batch(images: torch.Tensor, seeds: torch.Tensor, transform: v2.Transform) -> torch.Tensor:
    """Each uint8 image of a CPU batch through ``transform``, seeded by its sample's seed."""
    return torch.stack([augmented(image, int(seed), transform) for image, seed in zip(images, seeds, strict=True)])


class SeededAugmentation(TorchDataset):
    """Frames (a map-style dataset of uint8 images) read as ``(index, seed)`` items, each augmented at its seed in the
    DataLoader worker that decodes it."""

    def __init__(self, frames: Any, transform: v2.Transform) -> None:
        self.frames = frames
        self.transform = transform

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        index, seed = item
        return augmented(self.frames[index], seed, self.transform)
