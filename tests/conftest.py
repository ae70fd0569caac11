"""Shared fixtures: a session-wide dataset cache, so each embedded dataset is generated once per test run, and a
one-thread switch for tests of small networks."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TSRL_CACHE_DIR", str(tmp_path_factory.mktemp("tsrl_cache")))
    yield
    monkeypatch.undo()


@pytest.fixture
def one_torch_thread() -> None:
    """For tests of small tutor networks: a second intra-op thread gains them nothing and, on busy cores, it
    mostly waits, making them several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def written_checkpoints(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict, bytes]]:
    """Every run checkpoint the trainer writes during the test, in order: its payload and the file's bytes."""
    from experiments.checkpoint import write_checkpoint

    written = []

    def keep(path, payload: dict) -> None:
        write_checkpoint(path, payload)
        written.append((payload, path.read_bytes()))

    monkeypatch.setattr("experiments.train.write_checkpoint", keep)
    return written
