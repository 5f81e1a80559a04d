"""Fixtures for every test in the repository (``tests/`` and each plugin's ``tests/``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every user directory (cache, data, config) at a temporary folder."""
    home = tmp_path_factory.mktemp("home")
    for var in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("RECINET_HOME", str(home / "recinet"))
    for var in ("RECINET_CACHE_DIR", "RECINET_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)
