"""recinet: ReciNet crystal property prediction (local message passing + reciprocal space).

Importing this package is cheap: torch and pymatgen are imported only by the modules
that need them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("recinet")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
