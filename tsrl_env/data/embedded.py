"""The embedded forensics benchmark: a small, offline, deterministic stand-in for a deepfake-detection dataset.

Real "videos" are jittered crops of bundled photographs (see ``photos``); fake videos are the same kind of content
passed through one of six manipulation families (see ``manipulations``) whose traces imitate those of face
forgeries. Every frame, real or fake, is finally JPEG-compressed, which hides weak traces. Training sees some
families; ``test_unseen`` holds others, to measure generalisation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from tsrl_env.data.base import REAL_FAMILY, Dataset, Split
from tsrl_env.data.label_noise import TrainingVideos, noise_model, seeded_uniforms
from tsrl_env.data.manipulations import MANIPULATIONS, jpeg, to_uint8
from tsrl_env.data.photos import TILE_ASSIGNMENTS, random_shot, render_shot, tile_library
from tsrl_env.files import write_atomically
from tsrl_env.validation import choice_setting, image_size_setting, integer_setting, reject_unknown_keys, shown

# Bump whenever generation code or constants change what a config produces, so stale caches are not reused.
GENERATOR_VERSION = 2

DATASET_NAME = "embedded"
FAMILY_NAMES: tuple[str, ...] = tuple(MANIPULATIONS)
SPLIT_NAMES = ("train", "val", "test_seen", "test_unseen")
UNSEEN_VALIDATION = "val_unseen"
"""A split of reals and unseen-family fakes from the validation tiles, made only when ``val_unseen_size`` asks for it:
a held-out objective for measuring how far any weighting can raise unseen-family AUC, apart from ``test_unseen``."""
_TILE_SPLIT = {"train": "train", "val": "val", "test_seen": "test", "test_unseen": "test", UNSEEN_VALIDATION: "val"}
# The index of each split in its videos' seeds; len(SPLIT_NAMES) is the family figure's stream, so the optional split
# takes the next one.
_SPLIT_STREAM = {**{split: index for index, split in enumerate(SPLIT_NAMES)}, UNSEEN_VALIDATION: len(SPLIT_NAMES) + 1}
CONTENTS = ("benchmark", "pretraining")

# Settings added after results were recorded under hashes without them: left out of ``config_hash`` while at their
# default (the legacy behaviour), so every older config keeps its hash, its cache file and its fingerprints.
_ADDED_SETTINGS = ("tiles", "content", "noise_model", "noise_seed", "val_unseen_size")

# Tags the seed of a pair of videos, keeping it apart from the per-video seeds.
_PAIR_STREAM = 0x9A1

# Below this many videos a process pool costs more than it saves.
_MIN_VIDEOS_FOR_POOL = 200


@dataclass(frozen=True)
class EmbeddedConfig:
    """Settings of the embedded benchmark. The same config always generates byte-identical data.

    Sizes count images (frames); a video contributes ``frames_per_video`` consecutive images to one split, and
    videos come in real/fake pairs made from the same source frames (see ``_render_video``).
    ``strength_range`` bounds the manipulation strength drawn per fake video (1 = most visible trace).
    ``final_jpeg_quality`` bounds the quality of the JPEG every image gets last (drawn per video).
    ``val_unseen_size`` (default 0: none) adds a split ``val_unseen`` of reals and unseen-family fakes drawn from the
    validation tiles: what a weighting may be tuned against to measure the most a curriculum could raise unseen-family
    AUC, with ``test_unseen`` (test tiles) left to measure it. No other split changes with it.
    ``label_noise`` is the rate at which training labels are flipped, as ``noise_model`` spends it (``frame``, the
    default: each image independently; ``video``, ``class_conditional`` and ``instance``: see ``label_noise.py``);
    other splits stay clean. ``noise_seed`` None draws the flips from the dataset seed (the frame model from each
    video's own stream, as always); an integer draws them from a stream of that seed alone, so changing it changes
    no image. ``fake_fraction`` is the probability that a video is fake. ``texture_fraction`` is the share of shots (real
    content) made of procedural textures rather than photographs.

    ``tiles`` says which photograph tiles each split draws from: ``reshuffled`` (the default) splits them anew for
    every seed, so a test tile of one seed can be a training tile of another; ``fixed`` is the protocol's split, the
    same for every seed, which also sets tiles aside for pretraining. ``content: pretraining`` (with ``tiles: fixed``)
    draws every split from those tiles, for a Student pretrained without seeing any benchmark tile.

    The defaults are calibrated for a from-scratch ``regnetx_002`` Student trained 8 epochs with uniform weights
    (seeds 0 and 1): test_seen AUC 0.81 (0.89-0.90 without label noise), test_unseen 0.62-0.64. ``warp``
    and ``spectral`` are held out because they share traces with trained families (see ``manipulations``), so
    generalisation is possible but partial. ``double_jpeg`` is in neither list: such a Student barely learns it
    even when trained on it (AUC 0.5-0.6 among other families), so it would only dilute both test splits; name it
    to get a harder benchmark. Label noise is drawn per frame and the frames of a video mostly agree, so it takes
    15% to cost the Student 0.05-0.09 AUC.
    """

    seed: int = 0
    image_size: int = 64
    train_size: int = 4000
    val_size: int = 1000
    test_seen_size: int = 1200
    test_unseen_size: int = 1200
    frames_per_video: int = 8
    train_families: tuple[str, ...] = ("blend", "splice", "resynth")
    unseen_families: tuple[str, ...] = ("warp", "spectral")
    strength_range: tuple[float, float] = (0.7, 1.0)
    final_jpeg_quality: tuple[int, int] = (90, 98)
    label_noise: float = 0.15
    fake_fraction: float = 0.5
    texture_fraction: float = 0.05
    tiles: str = "reshuffled"
    content: str = "benchmark"
    noise_model: str = "frame"
    noise_seed: int | None = None
    val_unseen_size: int = 0

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON or the command line) but store tuples so the config stays hashable.
        for name in ("train_families", "unseen_families", "strength_range", "final_jpeg_quality"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{name} must be a list, e.g. {list(getattr(EmbeddedConfig, name))}, got {shown(value)}")
            object.__setattr__(self, name, tuple(value))
        for name in ("image_size", "train_size", "val_size", "test_seen_size", "test_unseen_size", "frames_per_video"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer >= 1, got {shown(value)}")
            if value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.val_unseen_size, bool) or not isinstance(self.val_unseen_size, int) or self.val_unseen_size < 0:
            raise ValueError(f"val_unseen_size must be an integer >= 0 (0: no such split), got {shown(self.val_unseen_size)}")
        image_size_setting(self.image_size)
        for name in ("train_families", "unseen_families"):
            families = getattr(self, name)
            unknown = [family for family in families if family not in MANIPULATIONS]
            if unknown:
                raise ValueError(f"{name} has unknown family name(s) {unknown}; accepted names are {list(FAMILY_NAMES)}")
            if len(set(families)) != len(families):
                raise ValueError(f"{name} lists a family more than once: {list(families)}")
        if not self.train_families:
            raise ValueError("train_families must name at least one family")
        if not self.unseen_families:
            raise ValueError("unseen_families must name at least one family (test_unseen needs fakes)")
        overlap = sorted(set(self.train_families) & set(self.unseen_families))
        if overlap:
            raise ValueError(f"train_families and unseen_families overlap on {overlap}; a family is either seen or unseen")
        low, high = self._pair("strength_range")
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"strength_range must satisfy 0 <= low <= high <= 1, got {self.strength_range}")
        low, high = self._pair("final_jpeg_quality")
        if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high <= 100):
            raise ValueError(f"final_jpeg_quality must be integers with 1 <= low <= high <= 100, got {self.final_jpeg_quality}")
        for name in ("label_noise", "texture_fraction", "fake_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
        if not 0.0 <= self.label_noise < 1.0:
            raise ValueError(f"label_noise must lie in [0, 1), got {self.label_noise}")
        if not 0.0 <= self.texture_fraction <= 1.0:
            raise ValueError(f"texture_fraction must lie in [0, 1], got {self.texture_fraction}")
        if not 0.0 < self.fake_fraction < 1.0:
            raise ValueError(f"fake_fraction must lie in (0, 1) so every split has both classes, got {self.fake_fraction}")
        choice_setting("tiles", self.tiles, TILE_ASSIGNMENTS)
        choice_setting("content", self.content, CONTENTS)
        if self.content == "pretraining" and self.tiles != "fixed":
            raise ValueError("content 'pretraining' needs tiles 'fixed' (reshuffled tiles set none aside); set tiles: fixed")
        noise_model(self.noise_model)
        if self.noise_seed is not None:
            object.__setattr__(self, "noise_seed", integer_setting("noise_seed", self.noise_seed, 0, or_none=True))

    @classmethod
    def filled(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` (an env's ``dataset_options``) with every setting they leave out at its default: a run's data
        settings read without checking the given options again."""
        return {**dataclasses.asdict(cls()), **options}

    def _pair(self, name: str) -> tuple[Any, Any]:
        value = getattr(self, name)
        if len(value) != 2:
            raise ValueError(f"{name} must be a (low, high) pair, got {value!r}")
        return value[0], value[1]

    def split_size(self, split: str) -> int:
        """Number of images in ``split``."""
        return int(getattr(self, f"{split}_size"))

    def split_families(self, split: str) -> tuple[str, ...]:
        """The manipulation families whose fakes appear in ``split``."""
        return self.unseen_families if split in ("test_unseen", UNSEEN_VALIDATION) else self.train_families

    @property
    def split_names(self) -> tuple[str, ...]:
        """The splits this config generates: the four of every benchmark, and ``val_unseen`` where it has a size."""
        return SPLIT_NAMES + ((UNSEEN_VALIDATION,) if self.val_unseen_size else ())


def hashed_settings(config: EmbeddedConfig) -> dict[str, Any]:
    """The config's fields, less each later-added setting left at its default (see ``_ADDED_SETTINGS``)."""
    defaults = {field.name: field.default for field in dataclasses.fields(EmbeddedConfig)}
    settings = dataclasses.asdict(config)
    return {name: value for name, value in settings.items() if name not in _ADDED_SETTINGS or value != defaults[name]}


def config_hash(config: EmbeddedConfig) -> str:
    """A short stable hash of the config's settings and ``GENERATOR_VERSION``, used to key the cache."""
    payload = json.dumps({"generator_version": GENERATOR_VERSION, **hashed_settings(config)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Video:
    frames: np.ndarray  # uint8 (F, 3, H, W)
    family: int
    strength: float


def _video_streams(config: EmbeddedConfig, split: str, video_index: int) -> list[np.random.SeedSequence]:
    """A video's own streams: its content, its manipulation and its legacy label noise."""
    return np.random.SeedSequence([config.seed, _SPLIT_STREAM[split], video_index]).spawn(3)


def _render_video(config: EmbeddedConfig, split: str, video_index: int, pool: list[np.ndarray]) -> _Video:
    """Generate one video from its own seed (plus its pair's), independent of every other video.

    Videos come in pairs (2k, 2k+1) that share their source frames, the way FaceForensics++ keeps the real video
    each fake was made from: remembering content then cannot tell real from fake, only the trace can. The pair draws one
    uniform u; the first video is fake if u < fake_fraction, the second if 1 - u < fake_fraction, so each is fake
    with probability fake_fraction and, at 0.5, every pair is one real and one fake video.
    """
    split_index = _SPLIT_STREAM[split]
    pair_rng = np.random.default_rng(np.random.SeedSequence([config.seed, split_index, video_index // 2, _PAIR_STREAM]))
    draw = pair_rng.random()
    is_fake = bool((draw if video_index % 2 == 0 else 1.0 - draw) < config.fake_fraction)
    n_frames = config.frames_per_video
    frames = render_shot(random_shot(pair_rng, pool, config.texture_fraction), pair_rng, config.image_size, n_frames)
    content_seed, manipulation_seed, _ = _video_streams(config, split, video_index)
    rng = np.random.default_rng(content_seed)
    families = config.split_families(split)
    family_name = families[rng.integers(len(families))]
    strength = float(rng.uniform(*config.strength_range))
    quality = int(rng.integers(config.final_jpeg_quality[0], config.final_jpeg_quality[1] + 1))
    if is_fake:
        donor = render_shot(random_shot(rng, pool, config.texture_fraction), rng, config.image_size, n_frames)
        manipulate = MANIPULATIONS[family_name]
        # Family and strength are per video, the details (mask, warp centre, fingerprint...) per frame, the way a
        # forgery follows a moving face: the frames then show several variants of the trace, not one.
        frame_seeds = manipulation_seed.spawn(n_frames)
        frames = np.stack(
            [
                manipulate(frame, strength, np.random.default_rng(seed), other)
                for frame, other, seed in zip(frames, donor, frame_seeds, strict=True)
            ]
        )
    encoded = np.stack([to_uint8(jpeg(frame, quality)) for frame in frames]).transpose(0, 3, 1, 2)
    return _Video(
        frames=np.ascontiguousarray(encoded),
        family=FAMILY_NAMES.index(family_name) if is_fake else REAL_FAMILY,
        strength=strength if is_fake else 0.0,
    )


def tile_pool(config: EmbeddedConfig, split: str) -> list[np.ndarray]:
    """The tiles ``split`` draws its photograph shots from (one array of tile indices per photograph)."""
    part = "pretraining" if config.content == "pretraining" else _TILE_SPLIT[split]
    return TILE_ASSIGNMENTS[config.tiles](config.seed)[part]


def _render_videos(config: EmbeddedConfig, split: str, video_indices: range) -> list[_Video]:
    pool = tile_pool(config, split)
    return [_render_video(config, split, index, pool) for index in video_indices]


def training_flips(config: EmbeddedConfig, fake: np.ndarray, strengths: np.ndarray) -> np.ndarray:
    """The flip mask (videos, frames) of the training videos with these clean classes and strengths.

    The draws are the noise model's only randomness, on streams apart from the images', so that changing
    ``label_noise``, ``noise_model`` or ``noise_seed`` leaves every image unchanged. ``noise_seed`` None keeps the
    legacy draws of the frame model, each video's own stream, and gives the other models the stream of the dataset
    seed (as ``noise_seed`` = ``seed``).
    """
    n_videos, n_frames = len(fake), config.frames_per_video
    if config.noise_seed is None and config.noise_model == "frame":
        streams = [_video_streams(config, "train", index)[2] for index in range(n_videos)]
        uniforms = np.stack([np.random.default_rng(stream).random(n_frames) for stream in streams])
    else:
        noise_seed = config.seed if config.noise_seed is None else config.noise_seed
        uniforms = seeded_uniforms(noise_seed, n_videos, n_frames)
    return noise_model(config.noise_model)(TrainingVideos(fake=fake, strengths=strengths, uniforms=uniforms), config.label_noise)


def _assemble_split(config: EmbeddedConfig, split: str, videos: list[_Video], group_offset: int) -> Split:
    size = config.split_size(split)
    n_frames = config.frames_per_video
    images = np.concatenate([video.frames for video in videos])[:size]
    fake = np.array([video.family != REAL_FAMILY for video in videos])
    clean = np.repeat(fake.astype(np.int64), n_frames)[:size]
    strengths = np.array([video.strength for video in videos], dtype=np.float32)
    if split == "train":
        flipped = training_flips(config, fake, strengths).reshape(-1)[:size]
    else:
        flipped = np.zeros(size, dtype=bool)
    groups = np.repeat(np.arange(len(videos)) + group_offset, n_frames)[:size]
    families = np.repeat([video.family for video in videos], n_frames)[:size]
    return Split(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(np.where(flipped, 1 - clean, clean).astype(np.int64)),
        clean_labels=torch.from_numpy(clean),
        groups=torch.from_numpy(groups.astype(np.int64)),
        families=torch.from_numpy(families.astype(np.int64)),
        strengths=torch.from_numpy(np.repeat(strengths, n_frames)[:size]),
    )


def generate_embedded(config: EmbeddedConfig | None = None, workers: int | None = None) -> Dataset:
    """Generate the benchmark for ``config`` (default settings if None), without touching any cache.

    ``workers`` processes render videos in parallel (default: up to the number of CPUs, at most 4); the result
    does not depend on it, because every video draws from its own seed.
    """
    config = config or EmbeddedConfig()
    counts = {split: -(-config.split_size(split) // config.frames_per_video) for split in config.split_names}
    jobs = [
        (split, range(start, min(start + 64, counts[split])))
        for split in config.split_names
        for start in range(0, counts[split], 64)
    ]
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if workers > 1 and sum(counts.values()) >= _MIN_VIDEOS_FOR_POOL:
        tile_library()  # Load once here so forked workers inherit it instead of each decoding every photograph.
        with ProcessPoolExecutor(max_workers=workers) as pool:
            chunks = list(pool.map(_render_videos, [config] * len(jobs), *zip(*jobs, strict=True)))
    else:
        chunks = [_render_videos(config, split, indices) for split, indices in jobs]
    videos: dict[str, list[_Video]] = {split: [] for split in config.split_names}
    for (split, _), chunk in zip(jobs, chunks, strict=True):
        videos[split].extend(chunk)
    splits: dict[str, Split] = {}
    group_offset = 0
    for split in config.split_names:
        splits[split] = _assemble_split(config, split, videos[split], group_offset)
        group_offset += counts[split]
    return Dataset(name=DATASET_NAME, splits=splits, family_names=FAMILY_NAMES, knows_label_noise=True)


def _build_config(config: EmbeddedConfig | None, overrides: dict[str, Any]) -> EmbeddedConfig:
    reject_unknown_keys(overrides, [field.name for field in dataclasses.fields(EmbeddedConfig)], "embedded option")
    return dataclasses.replace(config or EmbeddedConfig(), **overrides)


def default_cache_dir() -> Path:
    """``$TSRL_CACHE_DIR`` if set, else ``~/.cache/tsrl``."""
    return Path(os.environ.get("TSRL_CACHE_DIR") or Path.home() / ".cache" / "tsrl")


def cache_path(config: EmbeddedConfig, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``load_embedded`` keeps the data for ``config``."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / f"{DATASET_NAME}-{config_hash(config)}.pt"


def cache_key(config: EmbeddedConfig | None = None, cache_dir: str | os.PathLike[str] | None = None, **overrides: Any) -> str:
    """The name ``load_embedded`` caches the data of these options under: it changes with any setting and with
    ``GENERATOR_VERSION``, and nothing else (not ``cache_dir``)."""
    return cache_path(_build_config(config, overrides), cache_dir).stem


def _to_payload(dataset: Dataset, config: EmbeddedConfig) -> dict[str, Any]:
    splits = {
        name: {field.name: getattr(split, field.name) for field in dataclasses.fields(Split)}
        for name, split in dataset.splits.items()
    }
    return {
        "generator_version": GENERATOR_VERSION,
        "config": json.dumps(hashed_settings(config), sort_keys=True),
        "family_names": list(dataset.family_names),
        "splits": splits,
        "content_sha256": _content_digest(splits, list(dataset.family_names)),
    }


def _content_digest(splits: dict[str, dict[str, torch.Tensor]], family_names: list[str]) -> str:
    """SHA-256 of a cached dataset's content: every split's tensors (name, dtype, shape, bytes) and the family names."""
    digest = hashlib.sha256(json.dumps(family_names).encode())
    for split in sorted(splits):
        for name, tensor in sorted(splits[split].items()):
            digest.update(f"{split}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _from_payload(payload: dict[str, Any], config: EmbeddedConfig) -> Dataset:
    """The dataset a cache file holds, once it is this config's, of this generator version, and its content hashes to
    the digest written with it; anything else raises a ValueError (the caller regenerates)."""
    settings = json.dumps(hashed_settings(config), sort_keys=True)
    if payload["generator_version"] != GENERATOR_VERSION or payload["config"] != settings:
        raise ValueError("the cache file holds another config's data, or another generator version's")
    if payload["content_sha256"] != _content_digest(payload["splits"], payload["family_names"]):
        raise ValueError("the cache file's content does not hash to the digest written with it")
    splits = {name: Split(**tensors) for name, tensors in payload["splits"].items()}
    return Dataset(name=DATASET_NAME, splits=splits, family_names=tuple(payload["family_names"]), knows_label_noise=True)


def load_embedded(
    config: EmbeddedConfig | None = None, cache_dir: str | os.PathLike[str] | None = None, **overrides: Any
) -> Dataset:
    """The benchmark for ``config`` with ``overrides`` applied, read from the cache or generated and cached.

    The cache file lives under ``cache_dir`` (default ``$TSRL_CACHE_DIR`` or ``~/.cache/tsrl``) and is named by a
    hash of the settings and ``GENERATOR_VERSION``, so any change regenerates. It carries its settings, its generator
    version and the SHA-256 of its content, checked at every read: a file truncated or damaged on disk, or holding other
    data under this name, is regenerated and overwritten, never used. An unknown override raises TypeError naming the
    accepted settings.
    """
    config = _build_config(config, overrides)
    path = cache_path(config, cache_dir)
    if path.exists():
        try:
            return _from_payload(torch.load(path, weights_only=True), config)
        except (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError, pickle.UnpicklingError):
            pass  # A truncated, damaged or foreign file: regenerate and overwrite it below.
    dataset = generate_embedded(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = io.BytesIO()
    torch.save(_to_payload(dataset, config), payload)
    write_atomically(path, payload.getvalue())
    return dataset


def save_family_grid(
    path: str | os.PathLike[str],
    config: EmbeddedConfig | None = None,
    examples_per_family: int = 6,
    strengths: tuple[float, ...] = (0.3, 0.6, 1.0),
    scale: int = 3,
    **overrides: Any,
) -> Path:
    """Write a PNG showing every family's trace, and return its path.

    One row per family; for each of ``examples_per_family`` real frames (the same ones in every row) the row shows
    the real frame followed by that frame manipulated at each of ``strengths``, all upscaled ``scale`` times with
    nearest-neighbour so the pixel-level trace stays visible. The final JPEG is left out to show the trace itself.
    """
    config = _build_config(config, overrides)
    pool = tile_pool(config, "test_seen")
    size = config.image_size
    examples = []
    for example in range(examples_per_family):
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, len(SPLIT_NAMES), example]))
        frame, donor = (render_shot(random_shot(rng, pool, config.texture_fraction), rng, size, 1)[0] for _ in range(2))
        examples.append((frame, donor, np.random.SeedSequence([config.seed, len(SPLIT_NAMES), example, 1])))
    cell, gap = size * scale, 2 * scale
    group_width = (1 + len(strengths)) * cell + gap * 3
    font = ImageFont.load_default(size=max(10, cell // 6))
    label_width = int(max(font.getlength(name) for name in FAMILY_NAMES)) + 12
    grid = Image.new(
        "RGB", (label_width + examples_per_family * group_width, len(FAMILY_NAMES) * (cell + gap) + cell // 3), "white"
    )
    draw = ImageDraw.Draw(grid)
    for column, strength in enumerate(("real", *strengths)):
        text = strength if isinstance(strength, str) else f"s={strength:g}"
        for example in range(examples_per_family):
            draw.text((label_width + example * group_width + column * cell + 4, 2), text, fill="black", font=font)
    for row, name in enumerate(FAMILY_NAMES):
        top = cell // 3 + row * (cell + gap)
        draw.text((4, top + cell // 2 - 8), name, fill="black", font=font)
        for example, (frame, donor, seed) in enumerate(examples):
            versions = [frame] + [MANIPULATIONS[name](frame, s, np.random.default_rng(seed), donor) for s in strengths]
            for column, version in enumerate(versions):
                tile = Image.fromarray(to_uint8(version)).resize((cell, cell), Image.Resampling.NEAREST)
                grid.paste(tile, (label_width + example * group_width + column * cell, top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path
