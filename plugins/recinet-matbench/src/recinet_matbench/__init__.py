"""recinet-matbench: the Matbench v0.1 structure regression tasks as a recinet dataset.

Installed, it registers the dataset ``matbench`` (entry-point group ``recinet.datasets``);
each task (``jdft2d``, ``mp_e_form``, ...) is a property, with ``--fold 0..4`` choosing the
official cross-validation fold. See :class:`~recinet_matbench.dataset.MatbenchDataset`.
"""

from __future__ import annotations

from recinet_matbench.dataset import MatbenchDataset, MatbenchWarning

__all__ = ["MatbenchDataset", "MatbenchWarning", "__version__"]

__version__ = "0.1.0"
