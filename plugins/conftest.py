"""Shared fixtures for the first-party plugins' tests (each plugin's ``tests/`` folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every user directory (cache, data, config) at a temporary folder."""
    home = tmp_path_factory.mktemp("home")
    for var in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("RECINET_HOME", str(home / "recinet"))
    for var in ("RECINET_CACHE_DIR", "RECINET_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests needing it skip with a reason if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
