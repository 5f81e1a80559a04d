"""Prediction heads, registered as ``recinet.heads`` entry points (SPEC §5)."""

from __future__ import annotations

from torch import nn


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """``Linear(d_in, d_hidden) -> SiLU -> Linear(d_hidden, d_out)``."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))
