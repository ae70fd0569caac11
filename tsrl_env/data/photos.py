"""Real image content for the embedded benchmark: offline photographs cut into tiles, and procedural textures.

The photographs ship inside scikit-image and scikit-learn, so the benchmark needs no download. Each photograph is
cut into non-overlapping square tiles and every tile belongs to exactly one split, so no pixel of a test image's
source region is ever seen in training. A "video" is a crop inside one tile (a ``Shot``); its frames are small
jitters of that crop, the way consecutive frames of a face track differ by a little motion.

Procedural textures (fractal noise, gradients with blobs, warped waves) add content no photograph has, so the
detector cannot simply memorise the few photographs. They are a small share by default: at 5% of shots their
synthetic statistics are not mistaken for a forgery trace, while an earlier calibration with most content
procedural cost the Student about 0.04 seen AUC, real textures being flagged as fake.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

TILE_SIZE = 112
MIN_CROP = 48
MAX_SHIFT = 2.5  # frame-to-frame jitter, in tile pixels
MAX_ZOOM = 0.03  # frame-to-frame relative change of the crop side

COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
GRAY_PHOTOS = ("camera", "moon", "coins", "grass", "gravel", "brick", "clock")
SKLEARN_PHOTOS = ("china", "flower")
TILE_SPLITS = ("train", "val", "test")
TILE_FRACTIONS = (0.6, 0.1, 0.3)

# The protocol's split (``fixed_tiles``): made once, from FIXED_TILE_SEED, and the same for every dataset seed. With
# the library's 6 to 111 tiles per photograph these fractions give each photograph at least 2 train, 2 pretraining,
# 1 val and 1 test tile; 155 / 91 / 41 / 70 of the 357 tiles in all (docs/data.md has the count per photograph).
FIXED_TILE_FRACTIONS = {"train": 0.45, "pretraining": 0.25, "val": 0.10, "test": 0.20}
FIXED_TILE_SEED = 0

# Tag the streams of the two splits apart, so the fixed split is not one of the reshuffled ones.
_RESHUFFLED_STREAM = 0x7113
_FIXED_STREAM = 0xF1ED

# Flat tiles (the black surround of the retina scan, the lunar night side) carry no content to manipulate.
_MIN_TILE_STD = 0.015


@dataclass(frozen=True)
class TileLibrary:
    """All usable tiles of the bundled photographs.

    ``tiles`` is uint8 of shape (N, TILE_SIZE, TILE_SIZE, 3); ``photo_ids`` gives each tile's photograph as an
    index into ``photo_names``.
    """

    tiles: np.ndarray
    photo_ids: np.ndarray
    photo_names: tuple[str, ...]


def _colourise(gray: np.ndarray, seed: int) -> np.ndarray:
    """Turn a grayscale photograph into a plausible colour one.

    Replicating the gray channel would give images whose channels are exactly equal, a shortcut any colour
    manipulation would trip over; a smooth random chroma field keeps the luminance and breaks that equality.
    """
    rng = np.random.default_rng(seed)
    h, w = gray.shape
    chroma = rng.standard_normal((h // 32 + 2, w // 32 + 2, 3)).astype(np.float32)
    chroma = ndimage.zoom(chroma, (h / chroma.shape[0], w / chroma.shape[1], 1), order=3)[:h, :w]
    tint = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    return np.clip(gray[..., None] * tint * (1.0 + 0.08 * chroma), 0.0, 1.0)


def load_photos() -> dict[str, np.ndarray]:
    """The bundled photographs as float32 RGB arrays in [0, 1], keyed by name, in a fixed order."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos: dict[str, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in COLOUR_PHOTOS:
            photos[name] = getattr(skimage.data, name)()[..., :3].astype(np.float32) / 255.0
        for index, name in enumerate(GRAY_PHOTOS):
            photos[name] = _colourise(getattr(skimage.data, name)().astype(np.float32) / 255.0, seed=index)
        for name, image in zip(SKLEARN_PHOTOS, load_sample_images().images, strict=True):
            photos[name] = image.astype(np.float32) / 255.0
    return photos


@functools.lru_cache(maxsize=1)
def tile_library() -> TileLibrary:
    """Cut every bundled photograph into a grid of non-overlapping tiles, dropping flat ones (cached)."""
    tiles: list[np.ndarray] = []
    photo_ids: list[int] = []
    photos = load_photos()
    for photo_id, image in enumerate(photos.values()):
        height, width = image.shape[:2]
        for y in range(0, height - TILE_SIZE + 1, TILE_SIZE):
            for x in range(0, width - TILE_SIZE + 1, TILE_SIZE):
                tile = image[y : y + TILE_SIZE, x : x + TILE_SIZE]
                if tile.mean(axis=-1).std() >= _MIN_TILE_STD:
                    tiles.append(np.round(tile * 255.0).astype(np.uint8))
                    photo_ids.append(photo_id)
    return TileLibrary(np.stack(tiles), np.asarray(photo_ids, dtype=np.int64), tuple(photos))


TileSplit = dict[str, list[np.ndarray]]
"""Tile indices per part (``train``, ``val``, ...): one array per photograph, photographs in library order."""


def _split_each_photo(rng: np.random.Generator, fractions: dict[str, float]) -> TileSplit:
    """Shuffle the tiles of each photograph and cut them into parts of about ``fractions`` of its tiles.

    Every part but the first gets ``max(1, round(fraction * n))`` tiles of a photograph of ``n`` tiles, in the order
    given, and the first part the rest, so every part sees every photograph (in different places).
    """
    library = tile_library()
    names = list(fractions)
    result: TileSplit = {name: [] for name in names}
    for photo_id in range(len(library.photo_names)):
        indices = rng.permutation(np.flatnonzero(library.photo_ids == photo_id))
        counts = [max(1, round(fractions[name] * len(indices))) for name in names[1:]]
        if len(indices) - sum(counts) < 1:
            raise ValueError(f"photo {library.photo_names[photo_id]!r} has too few tiles to split into {names}")
        bounds = np.cumsum([len(indices) - sum(counts), *counts])
        for name, part in zip(names, np.split(indices, bounds[:-1]), strict=True):
            result[name].append(part)
    return result


def split_tiles(seed: int) -> TileSplit:
    """Assign the tiles of each photograph to ``train`` / ``val`` / ``test`` by a shuffle of dataset seed ``seed``.

    The shuffle is stratified by photograph so every split sees every photograph, and every split gets at least one
    tile of each photograph. Being drawn anew for every seed, a test tile of one seed is often a training tile of
    another (``tiles: reshuffled``, the legacy setting); :func:`fixed_tiles` keeps each tile in one split.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, _RESHUFFLED_STREAM]))
    return _split_each_photo(rng, dict(zip(TILE_SPLITS, TILE_FRACTIONS, strict=True)))


def fixed_tiles() -> TileSplit:
    """The protocol's split of the tiles into ``train`` / ``pretraining`` / ``val`` / ``test``, the same for every
    dataset seed (``tiles: fixed``).

    Drawn once from ``FIXED_TILE_SEED``, so no val or test tile is a training tile of any dataset seed, and the
    ``pretraining`` tiles are set aside for Students pretrained before the benchmark (``content: pretraining``): no
    benchmark split draws from them.
    """
    rng = np.random.default_rng(np.random.SeedSequence([FIXED_TILE_SEED, _FIXED_STREAM]))
    return _split_each_photo(rng, FIXED_TILE_FRACTIONS)


TILE_ASSIGNMENTS: dict[str, Callable[[int], TileSplit]] = {
    "reshuffled": split_tiles,
    "fixed": lambda seed: fixed_tiles(),  # the dataset seed does not move a tile
}
"""How tiles are assigned to splits, by the embedded benchmark's ``tiles`` setting: a function of the dataset seed."""


def _fractal_noise(rng: np.random.Generator, size: int, beta: float, channels: int) -> np.ndarray:
    """Gaussian noise with a 1/f^beta power spectrum, normalised to zero mean and unit variance per channel."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    radius[0, 0] = 1.0
    amplitude = radius ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    spectrum = rng.standard_normal((channels, size, size // 2 + 1)) + 1j * rng.standard_normal((channels, size, size // 2 + 1))
    field = np.fft.irfft2(spectrum * amplitude, s=(size, size)).transpose(1, 2, 0)
    field -= field.mean(axis=(0, 1))
    field /= field.std(axis=(0, 1)) + 1e-8
    return field.astype(np.float32)


def _random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0.1, 0.9, size=(n, 3)).astype(np.float32)


def texture_tile(rng: np.random.Generator, size: int = TILE_SIZE) -> np.ndarray:
    """A procedural texture tile, uint8 (size, size, 3): coloured fractal noise, gradients with blobs, or waves.

    Textures make the content unlimited and keep the detector from memorising the few photographs.
    """
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:
        fields = _fractal_noise(rng, size, beta=rng.uniform(2.2, 3.2), channels=3)
        mixing = rng.normal(0.0, 0.12, size=(3, 3)).astype(np.float32) + np.eye(3, dtype=np.float32) * rng.uniform(0.05, 0.15)
        image = _random_colours(rng, 1)[0] + fields @ mixing
    elif kind == 1:
        start, end, *blob_colours = _random_colours(rng, 2 + rng.integers(2, 6))
        angle = rng.uniform(0.0, 2.0 * np.pi)
        ramp = np.clip((np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) + 0.5, 0.0, 1.0)[..., None]
        image = start * (1.0 - ramp) + end * ramp
        for colour in blob_colours:
            cy, cx = rng.uniform(0.0, 1.0, size=2)
            radius = rng.uniform(0.08, 0.3)
            weight = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * radius**2))[..., None]
            image = image * (1.0 - weight) + colour * weight
        image = image + 0.03 * _fractal_noise(rng, size, beta=2.5, channels=3)
    else:
        colour_a, colour_b = _random_colours(rng, 2)
        frequency = rng.uniform(2.0, 9.0)
        angle = rng.uniform(0.0, np.pi)
        phase_warp = rng.uniform(0.5, 3.0) * _fractal_noise(rng, size, beta=3.0, channels=1)[..., 0]
        phase = 2.0 * np.pi * frequency * (np.cos(angle) * xx + np.sin(angle) * yy) + phase_warp
        wave = (0.5 + 0.5 * np.sin(phase))[..., None]
        image = colour_a * (1.0 - wave) + colour_b * wave + 0.03 * _fractal_noise(rng, size, beta=2.5, channels=3)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class Shot:
    """The fixed part of a "video": a tile and a crop of it (side and centre, in tile pixels)."""

    tile: np.ndarray
    side: float
    centre: tuple[float, float]


def random_shot(rng: np.random.Generator, pool: list[np.ndarray], texture_fraction: float = 0.0) -> Shot:
    """A random crop of a photograph tile from ``pool`` (one array of tile indices per photo), or, with probability
    ``texture_fraction``, of a fresh procedural texture.

    The crop side is drawn in [MIN_CROP, tile side minus the jitter margin] and the centre so that every jittered
    crop stays inside the tile.
    """
    if rng.random() < texture_fraction:
        tile = texture_tile(rng)
    else:
        # Pick the photograph first so the big photographs (many tiles) do not dominate the content.
        tiles = pool[rng.integers(len(pool))]
        tile = tile_library().tiles[tiles[rng.integers(len(tiles))]]
    side_limit = tile.shape[0]
    max_side = (side_limit - 2.0 * MAX_SHIFT) / (1.0 + MAX_ZOOM)
    side = rng.uniform(min(MIN_CROP, max_side), max_side)
    margin = side * (1.0 + MAX_ZOOM) / 2.0 + MAX_SHIFT
    cy, cx = rng.uniform(margin, side_limit - margin, size=2)
    return Shot(tile=tile, side=float(side), centre=(float(cy), float(cx)))


def render_shot(shot: Shot, rng: np.random.Generator, image_size: int, n_frames: int) -> np.ndarray:
    """The frames of a shot: small random shift/zoom jitters of its crop.

    Crops are resampled to ``image_size`` with a bicubic filter that widens when down-scaling, i.e. antialiased.
    Returns float32 (n_frames, image_size, image_size, 3) in [0, 1].
    """
    source = Image.fromarray(shot.tile)
    frames = np.empty((n_frames, image_size, image_size, 3), dtype=np.float32)
    for index in range(n_frames):
        cy, cx = np.asarray(shot.centre) + rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=2)
        half = shot.side * (1.0 + rng.uniform(-MAX_ZOOM, MAX_ZOOM)) / 2.0
        box = (cx - half, cy - half, cx + half, cy + half)
        resized = source.resize((image_size, image_size), Image.Resampling.BICUBIC, box=box)
        frames[index] = np.asarray(resized, dtype=np.float32) / 255.0
    return frames
