"""Tests of which photograph tiles each split draws from: the protocol's fixed split keeps evaluation tiles out of
training for every dataset seed, the legacy reshuffled split does not, and pretraining content is set apart."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tsrl_env.data import embedded
from tsrl_env.data.embedded import SPLIT_NAMES, EmbeddedConfig, generate_embedded, tile_pool
from tsrl_env.data.photos import FIXED_TILE_FRACTIONS, fixed_tiles, split_tiles, tile_library

TINY = {"image_size": 32, "train_size": 64, "val_size": 16, "test_seen_size": 16, "test_unseen_size": 16, "frames_per_video": 4}
SEEDS = range(20)


def tiles_of(config: EmbeddedConfig, split: str) -> set[int]:
    return set(np.concatenate(tile_pool(config, split)).tolist())


def test_fixed_split_keeps_val_and_test_tiles_out_of_training_for_every_seed() -> None:
    configs = [EmbeddedConfig(seed=seed, tiles="fixed", **TINY) for seed in SEEDS]
    pools = [{split: tiles_of(config, split) for split in SPLIT_NAMES} for config in configs]
    assert all(pool == pools[0] for pool in pools), "the fixed split must not move with the dataset seed"
    train_any_seed = set().union(*(pool["train"] for pool in pools))
    evaluation_any_seed = set().union(*(pool[split] for pool in pools for split in ("val", "test_seen", "test_unseen")))
    assert train_any_seed and evaluation_any_seed
    assert not train_any_seed & evaluation_any_seed
    assert not pools[0]["val"] & pools[0]["test_seen"]
    pretraining = set(np.concatenate(fixed_tiles()["pretraining"]).tolist())
    assert pretraining and not pretraining & (train_any_seed | evaluation_any_seed)


def test_fixed_split_parts_cover_the_library_once_with_every_photograph_in_each() -> None:
    parts = fixed_tiles()
    assert list(parts) == list(FIXED_TILE_FRACTIONS)
    library = tile_library()
    everything = np.concatenate([np.concatenate(per_photo) for per_photo in parts.values()])
    assert np.array_equal(np.sort(everything), np.arange(len(library.tiles)))
    for name, per_photo in parts.items():
        assert len(per_photo) == len(library.photo_names)
        for photo_id, tiles in enumerate(per_photo):
            assert len(tiles) >= 1 and np.all(library.photo_ids[tiles] == photo_id), (name, photo_id)
    shares = {name: sum(len(tiles) for tiles in per_photo) / len(library.tiles) for name, per_photo in parts.items()}
    for name, fraction in FIXED_TILE_FRACTIONS.items():
        assert abs(shares[name] - fraction) < 0.04, (name, shares[name])


def test_reshuffled_split_puts_test_tiles_of_one_seed_in_training_of_another() -> None:
    # Why the protocol needs tiles: fixed. The legacy split reshuffles the pool per dataset seed, so a Student trained
    # on seed 1 has seen most of seed 0's test tiles (68 of 107).
    test_of_seed_0 = set(np.concatenate(split_tiles(0)["test"]).tolist())
    train_of_seed_1 = set(np.concatenate(split_tiles(1)["train"]).tolist())
    assert len(test_of_seed_0 & train_of_seed_1) > 0.4 * len(test_of_seed_0)
    legacy = [EmbeddedConfig(seed=seed, **TINY) for seed in SEEDS]
    train_any_seed = set().union(*(tiles_of(config, "train") for config in legacy))
    assert tiles_of(legacy[0], "test_seen") <= train_any_seed


def test_pretraining_content_draws_every_split_from_pretraining_tiles_only() -> None:
    pretraining = set(np.concatenate(fixed_tiles()["pretraining"]).tolist())
    benchmark = set().union(
        *(tiles_of(EmbeddedConfig(seed=seed, tiles="fixed", **TINY), split) for seed in SEEDS for split in SPLIT_NAMES)
    )
    for seed in (0, 7):
        config = EmbeddedConfig(seed=seed, tiles="fixed", content="pretraining", **TINY)
        for split in SPLIT_NAMES:
            assert tiles_of(config, split) == pretraining
    assert not pretraining & benchmark


def test_pretraining_dataset_renders_shots_of_pretraining_tiles_only(monkeypatch: pytest.MonkeyPatch) -> None:
    library = tile_library().tiles
    used: list[int] = []
    original = embedded.random_shot

    def recording(rng, pool, texture_fraction=0.0):
        shot = original(rng, pool, texture_fraction)
        used.append(int(np.flatnonzero((library == shot.tile).all(axis=(1, 2, 3)))[0]))
        return shot

    monkeypatch.setattr(embedded, "random_shot", recording)
    config = EmbeddedConfig(tiles="fixed", content="pretraining", texture_fraction=0.0, **TINY)
    generate_embedded(config, workers=1)
    pretraining = set(np.concatenate(fixed_tiles()["pretraining"]).tolist())
    assert len(used) >= 28 and set(used) <= pretraining  # a shot per pair and per fake video's donor


def test_pretraining_content_needs_fixed_tiles() -> None:
    with pytest.raises(ValueError, match="set tiles: fixed"):
        EmbeddedConfig(content="pretraining")
    with pytest.raises(ValueError, match="tiles must be one of reshuffled, fixed"):
        EmbeddedConfig(tiles="fix")
    with pytest.raises(ValueError, match="content must be one of benchmark, pretraining"):
        EmbeddedConfig(tiles="fixed", content="pretrain")


def test_tile_settings_change_the_cache_key_and_the_images() -> None:
    legacy = EmbeddedConfig(**TINY)
    fixed = EmbeddedConfig(tiles="fixed", **TINY)
    pretraining = EmbeddedConfig(tiles="fixed", content="pretraining", **TINY)
    assert len({embedded.config_hash(config) for config in (legacy, fixed, pretraining)}) == 3
    images = [generate_embedded(config, workers=1).splits["test_seen"].images for config in (legacy, fixed, pretraining)]
    assert not torch.equal(images[0], images[1]) and not torch.equal(images[1], images[2])


def test_docs_table_of_tile_counts_is_the_fixed_split() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", text, flags=re.MULTILINE)
    library, parts = tile_library(), fixed_tiles()
    expected = [
        (name, str(np.sum(library.photo_ids == photo_id)), *(str(len(parts[part][photo_id])) for part in FIXED_TILE_FRACTIONS))
        for photo_id, name in enumerate(library.photo_names)
    ]
    assert rows == expected
