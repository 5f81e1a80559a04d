"""The one training step: the engine and every benchmark run (and time) this function.

A step is: standardise the targets with the scaler inside the model, forward under the run's
precision (duplicate edges merged, :mod:`recinet_cli.model.edges`), masked L1 loss plus the
head's auxiliary loss (MoE load balancing), backward, optional gradient clipping, optimiser
step and learning-rate scheduler step (OneCycle is stepped per batch).

Nothing here reads a value back to the host: the returned loss and predictions are device
tensors, so a GPU step never waits for the CPU. The caller checks the loss for non-finite
values once per epoch (:class:`NonFinite`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from recinet_cli.model.precision import autocast
from recinet_cli.model.recinet import masked_l1, prepare_inputs

__all__ = ["NonFinite", "StepOutput", "forward_standardized", "make_optimizer", "train_step"]


@dataclass(frozen=True)
class StepOutput:
    """What one step produced (device tensors, detached).

    Attributes:
        loss: ``[]`` the total loss (masked L1 in standardised units + auxiliary loss).
        pred_std: ``[B, T]`` float32 predictions in standardised units.
    """

    loss: Tensor
    pred_std: Tensor


def forward_standardized(model: Any, batch: Any, config: Any, precision: str, merge_edges: bool = True) -> Tensor:
    """``[B, T]`` float32 head outputs in standardised units for a PyG ``batch``.

    ``model`` is the :class:`~recinet_cli.model.recinet.ReciNet` or its DDP wrapper;
    ``precision`` ``auto``/``fp32``/``bf16`` (:func:`recinet_cli.model.precision.autocast`);
    ``merge_edges`` False runs the full multigraph (the benchmark's reference formulation).
    """
    inputs = prepare_inputs(batch, config, merge_edges=merge_edges)
    with autocast(precision, batch.atomic_numbers.device):
        out = model(**inputs, standardized=True)
    return out.float()


def train_step(
    model: Any,
    batch: Any,
    config: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    precision: str,
    clip_grad: float | None = None,
    merge_edges: bool = True,
) -> StepOutput:
    """One optimisation step on ``batch`` (see the module docstring).

    Args:
        model: the ReciNet, or its ``DistributedDataParallel`` wrapper (``model.module``).
        batch: a PyG batch with ``y [B, T]`` (NaN = missing label) on the model's device.
        config: the model's :class:`~recinet_cli.model.config.ModelConfig`.
        optimizer, scheduler: stepped once each (``scheduler`` may be None).
        precision: ``auto``, ``fp32`` or ``bf16``.
        clip_grad: clip the global gradient norm to this value (None: no clipping).
        merge_edges: merge duplicate edges (same function, less work; False for the
            benchmark's reference formulation).
    """
    net = getattr(model, "module", model)
    y_std = (batch.y - net.target_mean) / net.target_std
    pred_std = forward_standardized(model, batch, config, precision, merge_edges)
    loss = masked_l1(pred_std, y_std) + net.aux_loss()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip_grad)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return StepOutput(loss.detach(), pred_std.detach())


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam; weight decay on weight matrices only (biases and norm parameters exempt)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    other = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.Adam(groups, lr=lr)


@dataclass
class NonFinite:
    """The losses of an epoch's steps, kept on the device and checked for non-finite values
    once per epoch (one host read instead of one per step)."""

    losses: list[Tensor] = field(default_factory=list)

    def watch(self, loss: Tensor) -> None:
        """Record the ``[]`` loss of the next step."""
        self.losses.append(loss)

    def first(self) -> tuple[int, float] | None:
        """``(index within the epoch, value)`` of the first non-finite loss, or None."""
        if not self.losses:
            return None
        stacked = torch.stack(self.losses).float()
        bad = ~torch.isfinite(stacked)
        if not bool(bad.any()):
            return None
        i = int(bad.nonzero()[0, 0])
        return i, float(stacked[i])
