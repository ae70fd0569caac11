"""Tests of the embedded forensics benchmark: determinism, split hygiene, label noise, caching and manipulations."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from tsrl_env.data import embedded
from tsrl_env.data.base import REAL_FAMILY, Dataset
from tsrl_env.data.embedded import FAMILY_NAMES, EmbeddedConfig, generate_embedded, load_embedded, save_family_grid
from tsrl_env.data.manipulations import MANIPULATIONS
from tsrl_env.data.photos import random_shot, render_shot, split_tiles, tile_library

TINY = {"image_size": 32, "train_size": 160, "val_size": 48, "test_seen_size": 48, "test_unseen_size": 48, "frames_per_video": 4}


def tiny_config(**changes: object) -> EmbeddedConfig:
    return EmbeddedConfig(**{**TINY, **changes})


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    return generate_embedded(tiny_config())


def assert_same(a: Dataset, b: Dataset) -> None:
    assert a.family_names == b.family_names
    assert a.splits.keys() == b.splits.keys()
    for name in a.splits:
        for field in dataclasses.fields(a.splits[name]):
            assert torch.equal(getattr(a.splits[name], field.name), getattr(b.splits[name], field.name)), (name, field.name)


# SHA-256 of every split's images, labels, clean labels, groups, families and strengths, and the config hash, as the
# code before the settings tiles, content, noise_model and noise_seed existed (commit 7ce84a2) made them: a legacy
# config must keep its bytes and its cache key, so that recorded results and fingerprints reproduce.
LEGACY_DIGESTS = {
    0: ("133f131624b89ac42f6da6cf73aa936f277a6e1aa1835aad160aa5e9d26ef8fd", "91e7bb3368614968"),
    1: ("fbc71b567c61be90fd40874a5198844e9038dd6beefc6af8a6865f0a584ca654", "8b17cbef74f2daed"),
}
LEGACY_DEFAULT_HASH = "fe2ddad5c8f8e03a"


@pytest.mark.parametrize("seed", list(LEGACY_DIGESTS))
def test_legacy_configs_keep_their_bytes_and_hash(seed: int) -> None:
    sizes = {"train_size": 64, "val_size": 16, "test_seen_size": 16, "test_unseen_size": 16}
    config = tiny_config(**sizes, label_noise=0.3, seed=seed)
    hasher = hashlib.sha256()
    for split in generate_embedded(config, workers=1).splits.values():
        for field in ("images", "labels", "clean_labels", "groups", "families", "strengths"):
            hasher.update(getattr(split, field).numpy().tobytes())
    assert (hasher.hexdigest(), embedded.config_hash(config)) == LEGACY_DIGESTS[seed]
    assert embedded.config_hash(EmbeddedConfig()) == LEGACY_DEFAULT_HASH
    # The added settings at their defaults are the legacy behaviour, given or not.
    explicit = dataclasses.replace(config, tiles="reshuffled", content="benchmark", noise_model="frame", noise_seed=None)
    assert embedded.cache_key(explicit) == embedded.cache_key(config)


def test_same_config_gives_identical_bytes(tiny: Dataset) -> None:
    assert_same(tiny, generate_embedded(tiny_config()))


def test_process_pool_does_not_change_the_data() -> None:
    # One frame per video gives enough videos for generate_embedded to use its process pool.
    config = EmbeddedConfig(
        image_size=16, train_size=120, val_size=40, test_seen_size=40, test_unseen_size=40, frames_per_video=1
    )
    assert_same(generate_embedded(config, workers=1), generate_embedded(config, workers=2))


def test_different_seed_gives_different_data(tiny: Dataset) -> None:
    other = generate_embedded(tiny_config(seed=1))
    for name in tiny.splits:
        assert not torch.equal(tiny.splits[name].images, other.splits[name].images)


def test_split_shapes_and_dtypes(tiny: Dataset) -> None:
    config = tiny_config()
    assert tiny.family_names == FAMILY_NAMES == tuple(MANIPULATIONS)
    assert set(tiny.splits) == {"train", "val", "test_seen", "test_unseen"}
    for name, split in tiny.splits.items():
        size = config.split_size(name)
        assert split.images.shape == (size, 3, 32, 32) and split.images.dtype == torch.uint8
        for field, dtype in (
            ("labels", torch.int64),
            ("clean_labels", torch.int64),
            ("groups", torch.int64),
            ("families", torch.int64),
            ("strengths", torch.float32),
        ):
            assert getattr(split, field).dtype == dtype, (name, field)
        real = split.families == REAL_FAMILY
        assert torch.equal(split.clean_labels, (~real).long())
        assert 0 < real.sum() < size, "every split needs both classes"
        assert torch.all(split.strengths[real] == 0)
        low, high = config.strength_range
        assert torch.all((split.strengths[~real] >= low) & (split.strengths[~real] <= high))


def test_pairs_share_a_source_shot_and_mostly_differ_in_label(tiny: Dataset) -> None:
    train = tiny.splits["train"]
    first_frames = train.images[:: TINY["frames_per_video"]].float()
    clean = train.clean_labels[:: TINY["frames_per_video"]]
    within_pair = (first_frames[0::2] - first_frames[1::2]).abs().mean()
    across_pairs = (first_frames[0::2] - first_frames[1::2].roll(1, 0)).abs().mean()
    assert within_pair < 0.5 * across_pairs
    # At fake_fraction 0.5 the antithetic draw makes every pair one real and one fake video.
    assert torch.all(clean[0::2] != clean[1::2])


def test_groups_are_disjoint_across_splits_and_consistent_within(tiny: Dataset) -> None:
    seen: set[int] = set()
    for split in tiny.splits.values():
        groups = set(split.groups.tolist())
        assert not groups & seen
        seen |= groups
        for group in groups:
            members = split.groups == group
            assert len(set(split.families[members].tolist())) == 1
            assert len(set(split.clean_labels[members].tolist())) == 1


def test_unseen_families_only_in_test_unseen(tiny: Dataset) -> None:
    config = tiny_config()
    unseen = {FAMILY_NAMES.index(name) for name in config.unseen_families}
    seen = {FAMILY_NAMES.index(name) for name in config.train_families}
    assert set(tiny.splits["test_unseen"].families.tolist()) - {REAL_FAMILY} <= unseen
    for name in ("train", "val", "test_seen"):
        families = set(tiny.splits[name].families.tolist()) - {REAL_FAMILY}
        assert families <= seen and not families & unseen


def test_tiles_are_split_without_overlap() -> None:
    parts = split_tiles(seed=0)
    indices = {name: np.concatenate(per_photo) for name, per_photo in parts.items()}
    assert sum(len(v) for v in indices.values()) == len(tile_library().tiles)
    assert len(np.unique(np.concatenate(list(indices.values())))) == len(tile_library().tiles)
    assert not np.array_equal(np.sort(split_tiles(seed=1)["test"][0]), np.sort(parts["test"][0]))


def test_texture_fraction_chooses_between_textures_and_photo_tiles() -> None:
    pool = split_tiles(seed=0)["train"]
    library = tile_library().tiles
    rng = np.random.default_rng(0)
    textures = [random_shot(rng, pool, texture_fraction=1.0).tile for _ in range(6)]
    photos = [random_shot(rng, pool, texture_fraction=0.0).tile for _ in range(6)]
    assert all(tile.shape == library.shape[1:] and tile.dtype == np.uint8 for tile in textures)
    assert not any((library == tile).all(axis=(1, 2, 3)).any() for tile in textures)
    assert all((library == tile).all(axis=(1, 2, 3)).any() for tile in photos)
    assert len({tile.tobytes() for tile in textures}) == len(textures)


def test_label_noise_rate_on_train_only_and_images_unchanged() -> None:
    sizes = {
        "image_size": 16,
        "train_size": 1200,
        "val_size": 16,
        "test_seen_size": 16,
        "test_unseen_size": 16,
        "frames_per_video": 8,
    }
    noisy = generate_embedded(EmbeddedConfig(label_noise=0.2, **sizes))
    clean = generate_embedded(EmbeddedConfig(label_noise=0.0, **sizes))
    assert abs(noisy.splits["train"].flipped.float().mean().item() - 0.2) < 0.05  # about 4 standard errors
    # Flips are drawn per image, not per video.
    per_video = noisy.splits["train"].flipped.view(-1, 8).sum(1)
    assert ((per_video > 0) & (per_video < 8)).any()
    for name in ("val", "test_seen", "test_unseen"):
        assert not noisy.splits[name].flipped.any()
    assert not clean.splits["train"].flipped.any()
    for name in noisy.splits:
        assert torch.equal(noisy.splits[name].images, clean.splits[name].images)
        assert torch.equal(noisy.splits[name].clean_labels, clean.splits[name].clean_labels)


def test_cache_round_trip_and_regeneration(tmp_path, monkeypatch) -> None:
    first = load_embedded(cache_dir=tmp_path, **TINY)
    files = sorted(tmp_path.glob("*.pt"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))

    def fail(*args: object, **kwargs: object) -> Dataset:
        raise AssertionError("regenerated although a cache file exists")

    monkeypatch.setattr(embedded, "generate_embedded", fail)
    assert_same(first, load_embedded(tiny_config(), cache_dir=tmp_path))
    monkeypatch.undo()

    changed = load_embedded(cache_dir=tmp_path, **{**TINY, "label_noise": 0.3})
    assert len(list(tmp_path.glob("*.pt"))) == 2
    assert not torch.equal(changed.splits["train"].labels, first.splits["train"].labels)

    monkeypatch.setattr(embedded, "GENERATOR_VERSION", embedded.GENERATOR_VERSION + 1)
    load_embedded(cache_dir=tmp_path, **TINY)
    assert len(list(tmp_path.glob("*.pt"))) == 3


def test_cache_dir_from_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TSRL_CACHE_DIR", str(tmp_path))
    assert embedded.cache_path(tiny_config()).parent == tmp_path


def test_unknown_override_is_a_type_error() -> None:
    with pytest.raises(TypeError) as error:
        load_embedded(label_nosie=0.1)
    message = str(error.value)
    assert "'label_nosie'" in message and "did you mean 'label_noise'?" in message and "train_families" in message


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"train_families": ("blend", "deepfake")}, "accepted names are"),
        ({"train_families": ("blend", "warp"), "unseen_families": ("warp",)}, "overlap"),
        ({"label_noise": 1.0}, "label_noise"),
        ({"label_noise": -0.1}, "label_noise"),
        ({"train_size": 0}, "train_size"),
        ({"strength_range": (0.8, 0.2)}, "strength_range"),
        ({"final_jpeg_quality": (90, 101)}, "final_jpeg_quality"),
        ({"unseen_families": ()}, "unseen_families"),
        ({"texture_fraction": 1.5}, "texture_fraction"),
        ({"tiles": "shuffled"}, "tiles must be one of reshuffled, fixed"),
        ({"content": "pretraining"}, "needs tiles 'fixed'"),
        ({"noise_model": "per_video"}, "unknown noise model"),
        ({"noise_seed": -2}, "noise_seed"),
    ],
)
def test_config_validation(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        EmbeddedConfig(**changes)


def test_config_accepts_lists() -> None:
    config = EmbeddedConfig(train_families=["blend", "splice"], unseen_families=["warp"])
    assert config.train_families == ("blend", "splice") and hash(config)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_manipulation_changes_image_more_at_higher_strength(name: str) -> None:
    rng = np.random.default_rng(0)
    pool = split_tiles(seed=0)["train"]
    weak, strong = [], []
    for index in range(12):
        image, donor = (render_shot(random_shot(rng, pool), rng, 48, 1)[0] for _ in range(2))
        seed = np.random.SeedSequence([index])
        outputs = {s: MANIPULATIONS[name](image, s, np.random.default_rng(seed), donor) for s in (0.25, 1.0)}
        for output in outputs.values():
            assert output.shape == image.shape and output.dtype == np.float32
            assert output.min() >= 0.0 and output.max() <= 1.0
        weak.append(np.abs(outputs[0.25] - image).mean())
        strong.append(np.abs(outputs[1.0] - image).mean())
    assert min(strong) > 1e-3, "a manipulation at full strength must change every image"
    assert np.mean(strong) > np.mean(weak)


def test_manipulations_are_documented() -> None:
    for name, function in MANIPULATIONS.items():
        assert function.__doc__ and "Trace" in function.__doc__ and "imitates" in function.__doc__, name


def test_family_grid_png(tmp_path) -> None:
    path = save_family_grid(tmp_path / "grid" / "families.png", examples_per_family=2, image_size=16, scale=2)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.height >= len(FAMILY_NAMES) * 32 and image.width >= 2 * 4 * 32


def test_an_unseen_family_validation_split_changes_no_other_split(tiny: Dataset) -> None:
    config = tiny_config(val_unseen_size=48, tiles="fixed")
    with_split = generate_embedded(config)
    without = generate_embedded(tiny_config(tiles="fixed"))
    assert set(with_split.splits) == {*without.splits, "val_unseen"}
    for name in without.splits:
        for field in dataclasses.fields(without.splits[name]):
            assert torch.equal(getattr(with_split.splits[name], field.name), getattr(without.splits[name], field.name))
    held_out = with_split.splits["val_unseen"]
    fakes = held_out.families[held_out.families != REAL_FAMILY]
    assert len(held_out) == 48 and len(fakes) > 0
    assert {FAMILY_NAMES[f] for f in fakes.tolist()} <= set(config.unseen_families)
    validation, pool = embedded.tile_pool(config, "val"), embedded.tile_pool(config, "val_unseen")
    assert len(pool) == len(validation) and all(np.array_equal(a, b) for a, b in zip(pool, validation, strict=True))
    assert "val_unseen" not in with_split.test_splits
    assert embedded.config_hash(tiny_config()) != embedded.config_hash(tiny_config(val_unseen_size=48))
    with pytest.raises(ValueError, match="val_unseen_size must be an integer >= 0"):
        tiny_config(val_unseen_size=-1)


def test_filled_options_keep_the_given_settings_and_default_the_rest() -> None:
    options = EmbeddedConfig.filled({"train_size": 96, "label_noise": 0.3})
    assert options["train_size"] == 96 and options["label_noise"] == 0.3
    assert options["val_size"] == EmbeddedConfig.val_size
    assert set(options) == {field.name for field in dataclasses.fields(EmbeddedConfig)}
