"""Where recinet keeps its files: the download/graph cache and the model store.

Resolution (first match wins):

* cache: ``$RECINET_CACHE_DIR``, else ``$RECINET_HOME/cache``, else the platform user cache
  directory (``platformdirs.user_cache_dir("recinet")``, e.g. ``~/.cache/recinet``);
* models: ``$RECINET_MODELS_DIR``, else ``$RECINET_HOME/models``, else
  ``platformdirs.user_data_dir("recinet")/models`` (e.g. ``~/.local/share/recinet/models``).

Nothing is created here; callers ``mkdir`` what they write into.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "models_dir"]


def _home() -> Path | None:
    home = os.environ.get("RECINET_HOME")
    return Path(home).expanduser() if home else None


def cache_dir() -> Path:
    """The cache directory (downloads under ``downloads/``, graph stores under ``graphs/``)."""
    if os.environ.get("RECINET_CACHE_DIR"):
        return Path(os.environ["RECINET_CACHE_DIR"]).expanduser()
    home = _home()
    if home is not None:
        return home / "cache"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("recinet", appauthor=False))


def models_dir() -> Path:
    """The model store directory (one sub-directory per registered model)."""
    if os.environ.get("RECINET_MODELS_DIR"):
        return Path(os.environ["RECINET_MODELS_DIR"]).expanduser()
    home = _home()
    if home is not None:
        return home / "models"
    from platformdirs import user_data_dir

    return Path(user_data_dir("recinet", appauthor=False)) / "models"


def sample_structures() -> list[Path]:
    """The real JARVIS POSCAR files shipped with the package (``recinet_cli/data/samples``),
    sorted by name: what ``recinet export`` checks parity on when no structures are given."""
    root = Path(__file__).parent / "data" / "samples"
    return sorted(root.glob("*.vasp"))
