"""ReciNet: backbone + head + target scaler, and the batch -> tensors preparation."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from recinet_cli.errors import RecinetError
from recinet_cli.model.backbone import ReciNetBackbone
from recinet_cli.model.config import ModelConfig
from recinet_cli.model.edges import merge_duplicate_edges
from recinet_cli.model.embedding import check_elements
from recinet_cli.model.kvectors import reciprocal_inputs

#: Names (and order) of the tensors :meth:`ReciNet.forward` takes.
INPUT_NAMES = (
    "atomic_numbers",
    "edge_index",
    "edge_len",
    "node_graph",
    "inv_natoms",
    "frac",
    "k_int",
    "k_norm",
    "k_slot",
    "pair_atom",
    "pair_k",
)


def build_head(config: ModelConfig) -> nn.Module:
    """The head module named by ``config.head``, through the plugin registry."""
    from recinet_cli.registry import get_head

    plugin = get_head(config.head)
    options = plugin.parse_options(config.head_options)
    return plugin.build(config.hidden, config.targets, options)


def prepare_inputs(batch: Any, config: ModelConfig, merge_edges: bool = False) -> dict[str, Tensor]:
    """Tensors for :meth:`ReciNet.forward` from a PyG batch of the graph store.

    ``batch`` has ``atomic_numbers``, ``edge_index``, ``edge_vec``, ``frac``, ``lattice``
    ``[B, 3, 3]`` and ``batch`` (as :class:`~recinet_cli.store.dataset.H5GraphDataset` gives).
    k-vectors and (atom, k) pairs are computed here, vectorised over the batch.

    ``merge_edges``: merge duplicate edges (:func:`~recinet_cli.model.edges.merge_duplicate_edges`)
    and add their multiplicity as ``edge_weight`` (same predictions, ~2.5x less per-edge
    work). Off, the result holds exactly the :data:`INPUT_NAMES` tensors of an exported model.
    """
    check_elements(batch.atomic_numbers)
    node_graph = batch.batch if getattr(batch, "batch", None) is not None else torch.zeros(
        batch.num_nodes, dtype=torch.long, device=batch.atomic_numbers.device
    )
    lattice = batch.lattice.reshape(-1, 3, 3)
    n_graphs = lattice.shape[0]
    counts = torch.bincount(node_graph, minlength=n_graphs).clamp(min=1)
    dtype = batch.frac.dtype
    inputs = {
        "atomic_numbers": batch.atomic_numbers,
        "edge_index": batch.edge_index,
        "edge_len": torch.linalg.norm(batch.edge_vec, dim=1),
        "node_graph": node_graph,
        "inv_natoms": (1.0 / counts).to(dtype),
        "frac": batch.frac,
    }
    if merge_edges:
        merged, length, weight = merge_duplicate_edges(batch.edge_index, inputs["edge_len"], int(node_graph.shape[0]))
        inputs.update(edge_index=merged, edge_len=length, edge_weight=weight)
    if config.reciprocal:
        rec = reciprocal_inputs(lattice, node_graph, config.kset, config.gmax, config.box)
        inputs.update(rec._asdict())
    else:
        dev = batch.frac.device
        empty_long = torch.zeros(0, dtype=torch.long, device=dev)
        inputs.update(
            k_int=torch.zeros(0, 3, dtype=dtype, device=dev),
            k_norm=torch.zeros(0, dtype=dtype, device=dev),
            k_slot=empty_long,
            pair_atom=empty_long,
            pair_k=empty_long,
        )
    return inputs


class ReciNet(nn.Module):
    """The full network: graph tensors in, properties in physical units out.

    Target standardisation lives inside the model (buffers ``target_mean``, ``target_std``
    ``[T]``, set from the training split with :meth:`set_scaler`), so a saved model predicts in
    physical units with nothing else to carry.

    Args:
        config: the model configuration.
        head: an already built head (default: built from ``config.head`` via the registry).

    Shapes: see :data:`INPUT_NAMES` and :class:`ReciNetBackbone`; output ``[B, T]``.
    """

    __jit_ignored_attributes__ = ["config"]

    def __init__(self, config: ModelConfig, head: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = ReciNetBackbone(config)
        self.head = head if head is not None else build_head(config)
        produced = getattr(self.head, "targets", None)
        if produced is not None and tuple(produced) != tuple(config.targets):
            raise RecinetError(f"head produces {list(produced)} but the config asks for {list(config.targets)}")
        n_t = len(config.targets)
        self.register_buffer("target_mean", torch.zeros(n_t))
        self.register_buffer("target_std", torch.ones(n_t))

    @torch.jit.ignore
    def set_scaler(self, mean: Tensor, std: Tensor) -> None:
        """Store the training-split mean and std (``[T]``; zero or NaN std becomes 1)."""
        std = torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))
        self.target_mean.copy_(torch.nan_to_num(mean))
        self.target_std.copy_(std)

    def forward(
        self,
        atomic_numbers: Tensor,
        edge_index: Tensor,
        edge_len: Tensor,
        node_graph: Tensor,
        inv_natoms: Tensor,
        frac: Tensor,
        k_int: Tensor,
        k_norm: Tensor,
        k_slot: Tensor,
        pair_atom: Tensor,
        pair_k: Tensor,
        standardized: bool = False,
        edge_weight: Optional[Tensor] = None,  # noqa: UP045 (TorchScript)
    ) -> Tensor:
        """``[B, T]`` predictions in physical units (``standardized=True``: the head output in
        standardised units, what the training loss compares). ``edge_weight [E]``: multiplicity
        of each edge after :func:`~recinet_cli.model.edges.merge_duplicate_edges` (None: every
        edge counts once)."""
        x = self.backbone(
            atomic_numbers, edge_index, edge_len, node_graph, inv_natoms, frac,
            k_int, k_norm, k_slot, pair_atom, pair_k, edge_weight,
        )
        y = self.head(x)
        return y if standardized else y * self.target_std + self.target_mean

    @torch.jit.ignore
    def standardized(self, **inputs: Tensor) -> Tensor:
        """Head output in standardised units for the tensors of :data:`INPUT_NAMES`."""
        return self(**inputs, standardized=True)

    @torch.jit.ignore
    def predict(self, batch: Any) -> Tensor:
        """Physical-unit predictions ``[B, T]`` for a PyG batch (eager convenience)."""
        return self(**prepare_inputs(batch, self.config, merge_edges=True))

    @torch.jit.ignore
    def aux_loss(self) -> Tensor:
        """Auxiliary loss of the last training-mode forward (MoE load balancing); 0 for other
        heads and in eval mode (a validation pass never sees a stale training value)."""
        value = getattr(self.head, "aux_loss", None)
        if not self.training or not isinstance(value, Tensor):
            return torch.zeros((), device=self.target_mean.device)
        return value


def masked_l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over the present (non-NaN) targets; missing labels contribute
    nothing (never filled). ``pred, target [B, T]`` -> scalar."""
    mask = torch.isfinite(target)
    diff = torch.where(mask, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return diff.abs().sum() / mask.sum().clamp(min=1)
