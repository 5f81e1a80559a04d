"""recinet dataset plugins for JARVIS-DFT: ``jarvis`` (dft_3d 2021) and ``jarvis_2d`` (dft_2d 2021).

Registered under the ``recinet.datasets`` entry-point group; use them as
``recinet train --dataset jarvis --target formation_energy`` or through
``recinet_cli.registry.get_dataset("jarvis")``. The public names are imported lazily, so
``python -m recinet_jarvis.splits`` does not load the dataset module first.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "DFT_2D_REMOTE",
    "DFT_3D_REMOTE",
    "PROPERTIES",
    "JarvisDFT2D",
    "JarvisDFT3D",
    "JarvisDataWarning",
]


def __getattr__(name: str) -> Any:
    """Import the public names from :mod:`recinet_jarvis.dataset` on first access."""
    if name in __all__:
        return getattr(import_module("recinet_jarvis.dataset"), name)
    raise AttributeError(f"module 'recinet_jarvis' has no attribute {name!r}")
