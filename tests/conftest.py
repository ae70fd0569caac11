"""Shared fixtures: a session-wide dataset cache, so each embedded dataset is generated once per test run."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TSRL_CACHE_DIR", str(tmp_path_factory.mktemp("tsrl_cache")))
    yield
    monkeypatch.undo()
