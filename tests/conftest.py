"""Shared fixtures: a dataset cache that persists across test runs, so that a second run generates no embedded dataset,
and a one-thread switch for tests of small networks; one torch thread in each of pytest-xdist's worker processes."""

from __future__ import annotations

import hashlib
import os
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

GENERATOR_CODE = Path(__file__).resolve().parents[1] / "tsrl_env" / "data"
GENERATOR_LIBRARIES = ("numpy", "scipy", "pillow", "scikit-image", "torch")
"""What draws and renders the embedded benchmark besides the code in ``tsrl_env/data``."""


def generator_digest() -> str:
    """A short SHA-256 of everything that decides the embedded benchmark's bytes: the source of ``tsrl_env/data`` and the
    versions of the libraries it draws and renders with. It names the test suite's cache folder, so that data written by
    other code is never read as this code's (each file also checks its own content hash when read)."""
    digest = hashlib.sha256()
    for path in sorted(GENERATOR_CODE.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for library in GENERATOR_LIBRARIES:
        digest.update(f"{library}=={version(library)}".encode())
    return digest.hexdigest()[:16]


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker (setup.cfg's ``-n``), one torch thread for it and for the processes it starts: workers
    share the cores, and two threads each on them mostly wait on one another."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def dataset_cache() -> None:
    """The embedded datasets of every test run, kept under the user's cache folder (``$XDG_CACHE_HOME``, else
    ``~/.cache``) in a folder named by :func:`generator_digest`."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tsrl" / "tests" / generator_digest()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TSRL_CACHE_DIR", str(root))
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
    from experiments.training.checkpoint import write_checkpoint

    written = []

    def keep(path, payload: dict) -> None:
        write_checkpoint(path, payload)
        written.append((payload, path.read_bytes()))

    monkeypatch.setattr("experiments.training.checkpoint.write_checkpoint", keep)
    return written
