"""recinet-example: a complete, minimal recinet dataset plugin to copy.

Installed, it registers the dataset ``example`` in the entry-point group
``recinet.datasets`` (see ``pyproject.toml``), so ``recinet datasets`` lists it and
``recinet train --task example:exfoliation_energy`` trains on it, offline. The data are 100
real JARVIS-DFT 2D monolayers shipped in ``data/`` (NIST, see ``data/LICENSE-jarvis.rst``).
"""

from __future__ import annotations

from recinet_example.dataset import PROPERTIES, ExampleDataset

__all__ = ["PROPERTIES", "ExampleDataset", "__version__"]

__version__ = "0.1.0"
