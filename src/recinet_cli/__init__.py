"""recinet: ReciNet crystal property prediction (local message passing + reciprocal space).

Importing this package is cheap: torch and pymatgen are imported only by the modules
that need them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("recinet")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "predict"]


def predict(structures: Any, props: Any = (), **kwargs: Any) -> Any:
    """Predict properties of structures with the model store's models.

    See :func:`recinet_cli.prediction.predict` (this alias keeps ``import recinet_cli`` cheap).
    """
    from recinet_cli.prediction import predict as _predict

    return _predict(structures, props, **kwargs)
