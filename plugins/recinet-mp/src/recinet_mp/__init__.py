"""recinet dataset plugin for the Materials Project MP-2018.6.1 set: ``mp``.

Registered under the ``recinet.datasets`` entry-point group; use it as
``recinet train --dataset mp --target formation_energy`` or through
``recinet_cli.registry.get_dataset("mp")``. The public names are imported lazily, so
``python -m recinet_mp.splits`` does not load the dataset module first.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["MP_2018_REMOTE", "PROPERTIES", "MPDataWarning", "MPDataset"]


def __getattr__(name: str) -> Any:
    """Import the public names from :mod:`recinet_mp.dataset` on first access."""
    if name in __all__:
        return getattr(import_module("recinet_mp.dataset"), name)
    raise AttributeError(f"module 'recinet_mp' has no attribute {name!r}")
