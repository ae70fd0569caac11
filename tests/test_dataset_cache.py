"""The embedded benchmark's cache is read only when its file is this config's data as written: a file damaged on disk,
holding another config's data under this name, or written before files carried their content hash is regenerated and
overwritten, never used; the test suite's persistent cache is keyed by the generator's own code."""

from __future__ import annotations

import shutil

import pytest
import torch

from tsrl_env.data import embedded
from tsrl_env.data.embedded import load_embedded

TINY = {"image_size": 16, "train_size": 64, "val_size": 16, "test_seen_size": 16, "test_unseen_size": 16, "frames_per_video": 4}


def _regenerations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every generation from here on (the data is still generated)."""
    calls = []
    generate = embedded.generate_embedded

    def counted(*args: object, **kwargs: object) -> embedded.Dataset:
        calls.append(1)
        return generate(*args, **kwargs)

    monkeypatch.setattr(embedded, "generate_embedded", counted)
    return calls


def _same(a: embedded.Dataset, b: embedded.Dataset) -> bool:
    return all(
        torch.equal(getattr(a.splits[name], field), getattr(b.splits[name], field))
        for name in a.splits
        for field in ("images", "labels", "clean_labels", "groups", "families", "strengths")
    )


def test_a_cache_file_is_read_back_without_generating(tmp_path, monkeypatch):
    first = load_embedded(cache_dir=tmp_path, **TINY)
    calls = _regenerations(monkeypatch)
    assert _same(load_embedded(cache_dir=tmp_path, **TINY), first) and not calls


def test_a_damaged_cache_file_that_still_loads_is_regenerated_not_used(tmp_path, monkeypatch):
    first = load_embedded(cache_dir=tmp_path, **TINY)
    (path,) = tmp_path.glob("*.pt")
    payload = torch.load(path, weights_only=True)
    payload["splits"]["train"]["images"][0, 0, 0, 0] ^= 1  # one bit of one pixel: the file stays a valid torch file
    torch.save(payload, path)
    calls = _regenerations(monkeypatch)
    assert _same(load_embedded(cache_dir=tmp_path, **TINY), first) and calls == [1]
    monkeypatch.undo()
    calls = _regenerations(monkeypatch)
    load_embedded(cache_dir=tmp_path, **TINY)
    assert not calls, "the regenerated file was written back and is read from now on"


def test_another_configs_data_or_a_file_without_its_content_hash_is_regenerated(tmp_path, monkeypatch):
    first = load_embedded(cache_dir=tmp_path, **TINY)
    other = load_embedded(cache_dir=tmp_path, **{**TINY, "label_noise": 0.3})
    mine, theirs = (
        embedded.cache_path(embedded.EmbeddedConfig(**settings), tmp_path) for settings in (TINY, {**TINY, "label_noise": 0.3})
    )
    shutil.copyfile(theirs, mine)  # the other config's data under this config's name
    calls = _regenerations(monkeypatch)
    reloaded = load_embedded(cache_dir=tmp_path, **TINY)
    assert calls == [1] and _same(reloaded, first) and not _same(reloaded, other)
    payload = torch.load(mine, weights_only=True)
    del payload["content_sha256"]  # as written before cache files carried it
    torch.save(payload, mine)
    load_embedded(cache_dir=tmp_path, **TINY)
    assert calls == [1, 1]
