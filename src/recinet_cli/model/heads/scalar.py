"""``scalar`` and ``mt-ls`` heads: plain MLP read-outs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from recinet_cli.contracts import HeadPlugin
from recinet_cli.model.heads import mlp


class ScalarMLP(nn.Module):
    """One MLP for all targets: ``[B, d] -> [B, T]``; ``targets`` names the T columns."""

    def __init__(self, in_dim: int, targets: Sequence[str]) -> None:
        super().__init__()
        self.targets = tuple(targets)
        self.net = mlp(in_dim, in_dim, len(self.targets))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PerTaskMLP(nn.Module):
    """Linear scalarisation baseline (ReciNet-LS): one MLP per task, ``[B, d] -> [B, T]``."""

    def __init__(self, in_dim: int, targets: Sequence[str]) -> None:
        super().__init__()
        self.targets = tuple(targets)
        self.nets = nn.ModuleList(mlp(in_dim, in_dim, 1) for _ in self.targets)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([net(x) for net in self.nets], dim=1)


class ScalarHead(HeadPlugin):
    """Linear(d, d) -> SiLU -> Linear(d, T)."""

    name = "scalar"
    description = "MLP read-out for one or more targets (single-task ReciNet)"

    def build(self, in_dim: int, targets: Sequence[str], options: object) -> nn.Module:
        return ScalarMLP(in_dim, targets)


class MultiTaskLSHead(HeadPlugin):
    """One MLP per task (the paper's linear-scalarisation baseline, ReciNet-LS)."""

    name = "mt-ls"
    description = "One MLP per task, losses summed (ReciNet-LS baseline)"

    def build(self, in_dim: int, targets: Sequence[str], options: object) -> nn.Module:
        return PerTaskMLP(in_dim, targets)
