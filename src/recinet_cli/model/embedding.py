"""Atom and edge embeddings (SPEC §1, paper B.2)."""

from __future__ import annotations

import json
from importlib import resources

import torch
from torch import Tensor, nn

from recinet_cli.errors import RecinetError
from recinet_cli.model.linear import BucketedLinear

#: Number of elements in the CGCNN table (Z = 1..100).
N_ELEMENTS = 100
CGCNN_DIM = 92


def cgcnn_table() -> Tensor:
    """``[101, 92]`` CGCNN one-hot atom features; row Z is element Z, row 0 is unused (zeros).

    The table ships as package data (``recinet_cli/data/atom_init.json``, MIT licence, from
    CGCNN by T. Xie; see ``ATOM_INIT_LICENSE.md``).
    """
    raw = json.loads(resources.files("recinet_cli.data").joinpath("atom_init.json").read_text())
    table = torch.zeros(N_ELEMENTS + 1, CGCNN_DIM)
    for z, vec in raw.items():
        table[int(z)] = torch.tensor(vec, dtype=torch.float32)
    return table


def check_elements(atomic_numbers: Tensor) -> None:
    """Raise a clear error for elements outside the CGCNN table (call outside scripted code)."""
    if atomic_numbers.numel() and (atomic_numbers.min() < 1 or atomic_numbers.max() > N_ELEMENTS):
        bad = atomic_numbers[(atomic_numbers < 1) | (atomic_numbers > N_ELEMENTS)][0].item()
        raise RecinetError(f"element Z={bad} is outside the CGCNN embedding table (Z 1-{N_ELEMENTS})")


class AtomEmbedding(nn.Module):
    """CGCNN features -> ``Linear(92, hidden)``.

    Shapes: ``atomic_numbers [N]`` (long) -> ``[N, hidden]``.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.register_buffer("table", cgcnn_table(), persistent=False)
        self.linear = BucketedLinear(CGCNN_DIM, hidden)

    def forward(self, atomic_numbers: Tensor) -> Tensor:
        return self.linear(self.table[atomic_numbers])

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({CGCNN_DIM} -> {self.hidden})"


class RBFExpansion(nn.Module):
    """Gaussian radial basis: ``exp(-((x - c_k) / w)^2)`` with ``bins`` centres on [vmin, vmax]
    and width ``w`` = the centre spacing.

    Shapes: ``x [*]`` -> ``[*, bins]``.
    """

    def __init__(self, vmin: float, vmax: float, bins: int) -> None:
        super().__init__()
        centers = torch.linspace(vmin, vmax, bins)
        self.register_buffer("centers", centers, persistent=False)
        self.width = float((vmax - vmin) / (bins - 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.exp(-(((x.unsqueeze(-1) - self.centers) / self.width) ** 2))

    def __repr__(self) -> str:
        c = self.centers
        return f"{self.__class__.__name__}({float(c[0]):g}..{float(c[-1]):g}, bins={c.numel()})"


class EdgeEmbedding(nn.Module):
    """PotNet edge feature: ``x = c / |d|`` -> RBF -> ``Linear(bins, hidden)`` -> Softplus.

    Shapes: ``edge_len [E]`` (Å) -> ``[E, hidden]``.
    """

    def __init__(self, hidden: int, bins: int, vmin: float, vmax: float, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)
        self.rbf = RBFExpansion(vmin, vmax, bins)
        self.linear = BucketedLinear(bins, hidden)
        self.act = nn.Softplus()

    def forward(self, edge_len: Tensor) -> Tensor:
        return self.act(self.linear(self.rbf(self.scale / edge_len)))
