"""The PotNet base convolution used as ReciNet's local layer (SPEC §2, paper B.3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _mlp(d_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.SiLU(), nn.Linear(d, d))


class PotNetConv(nn.Module):
    r"""Gated edge convolution.

    .. math::
        z_{ij} = [h_i \| h_j \| v_{ij}],\quad
        \beta_{ij} = \sigma(\mathrm{BN}(\mathrm{MLP}_1(z_{ij}))),\quad
        h_i' = \mathrm{ReLU}\big(h_i + \mathrm{BN}\big(\textstyle\sum_{j \to i}
               \beta_{ij} \odot \mathrm{MLP}_2(z_{ij})\big)\big)

    Messages flow from the edge source j (``edge_index[0]``) to the target i
    (``edge_index[1]``); each MLP is Linear(3d, d) -> SiLU -> Linear(d, d).

    Args:
        hidden: feature width d.

    Shapes:
        ``h [N, d]``, ``edge_attr [E, d]``, ``edge_index [2, E]`` -> ``[N, d]``.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gate_mlp = _mlp(3 * hidden, hidden)
        self.msg_mlp = _mlp(3 * hidden, hidden)
        self.gate_bn = nn.BatchNorm1d(hidden)
        self.out_bn = nn.BatchNorm1d(hidden)

    def forward(self, h: Tensor, edge_attr: Tensor, edge_index: Tensor) -> Tensor:
        src, dst = edge_index[0], edge_index[1]
        z = torch.cat((h[dst], h[src], edge_attr), dim=1)  # [E, 3d]: (h_i, h_j, v_ij)
        beta = torch.sigmoid(self.gate_bn(self.gate_mlp(z)))  # [E, d]
        msg = beta * self.msg_mlp(z)  # [E, d]
        agg = torch.zeros_like(h).index_add_(0, dst, msg)  # [N, d]
        return torch.relu(h + self.out_bn(agg))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(hidden={self.hidden})"
