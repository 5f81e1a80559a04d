"""The ReciNet encoder: embeddings, blocks of local conv + reciprocal update, mean pooling."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from recinet_cli.model.config import ModelConfig
from recinet_cli.model.embedding import AtomEmbedding, EdgeEmbedding
from recinet_cli.model.kvectors import box_vectors
from recinet_cli.model.linear import BucketedLinear
from recinet_cli.model.local_conv import PotNetConv
from recinet_cli.model.reciprocal import ReciprocalUpdate


class LocalBlock(nn.Module):
    """A block without the long-range stream ("w/o reciprocal" ablation): ``h <- conv(h)``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.conv = PotNetConv(hidden)

    def forward(
        self, h: Tensor, g: Tensor, edge_attr: Tensor, edge_index: Tensor, frac: Tensor,
        node_graph: Tensor, inv_natoms: Tensor, k_int: Tensor, k_norm: Tensor, k_slot: Tensor,
        pair_atom: Tensor, pair_k: Tensor, edge_weight: Optional[Tensor],  # noqa: UP045 (TorchScript)
    ) -> tuple[Tensor, Tensor]:
        return self.conv(h, edge_attr, edge_index, edge_weight), g


class ReciNetBlock(nn.Module):
    """Two-stream block with SPEC §4's merge rule.

    ``a = LocalConv(h)``, ``u = ReciprocalUpdate(g)``, ``g <- g + u``, ``h <- a + u``.
    """

    def __init__(self, hidden: int, kset: str, gmax: float, filter_rbf: int, n_box: int) -> None:
        super().__init__()
        self.conv = PotNetConv(hidden)
        self.reciprocal = ReciprocalUpdate(hidden, kset, gmax, filter_rbf, n_box)

    def forward(
        self, h: Tensor, g: Tensor, edge_attr: Tensor, edge_index: Tensor, frac: Tensor,
        node_graph: Tensor, inv_natoms: Tensor, k_int: Tensor, k_norm: Tensor, k_slot: Tensor,
        pair_atom: Tensor, pair_k: Tensor, edge_weight: Optional[Tensor],  # noqa: UP045 (TorchScript)
    ) -> tuple[Tensor, Tensor]:
        a = self.conv(h, edge_attr, edge_index, edge_weight)
        u = self.reciprocal(g, frac, node_graph, inv_natoms, k_int, k_norm, k_slot, pair_atom, pair_k)
        return a + u, g + u


class ReciNetBackbone(nn.Module):
    """Crystal graph -> graph vector.

    ``h^0 = Linear(CGCNN(z))``, ``g^0 = SiLU(W_r h^0)``, ``blocks`` two-stream blocks, mean
    pooling of h over each crystal's atoms.

    Shapes (N atoms, E edges, B crystals, K k-vectors, P atom×k pairs):
        ``atomic_numbers [N]``, ``edge_index [2, E]``, ``edge_len [E]`` Å,
        ``node_graph [N]``, ``inv_natoms [B]`` (1/N_m), ``frac [N, 3]``, ``k_int [K, 3]``,
        ``k_norm [K]``, ``k_slot [K]``, ``pair_atom [P]``, ``pair_k [P]``, ``edge_weight [E]`` (optional multiplicity of
        merged duplicate edges, see :mod:`recinet_cli.model.edges`) -> ``[B, hidden]``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.hidden
        self.hidden = d
        self.use_reciprocal = config.reciprocal
        self.atom_embedding = AtomEmbedding(d)
        self.edge_embedding = EdgeEmbedding(d, config.rbf_bins, config.rbf_min, config.rbf_max, config.edge_scale)
        blocks: list[nn.Module] = []
        if config.reciprocal:
            n_box = len(box_vectors(config.box)) if config.kset == "box" else 0
            self.global_init = BucketedLinear(d, d)  # W_r
            for _ in range(config.blocks):
                blocks.append(ReciNetBlock(d, config.kset, config.gmax, config.filter_rbf, n_box))
        else:
            self.global_init = nn.Identity()
            blocks = [LocalBlock(d) for _ in range(config.blocks)]
        self.blocks = nn.ModuleList(blocks)

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
        edge_weight: Optional[Tensor] = None,  # noqa: UP045 (TorchScript)
    ) -> Tensor:
        h = self.atom_embedding(atomic_numbers)  # [N, d]
        v = self.edge_embedding(edge_len)  # [E, d]
        g = torch.nn.functional.silu(self.global_init(h)) if self.use_reciprocal else h
        inv_atom = inv_natoms[node_graph]  # [N]
        for block in self.blocks:
            h, g = block(h, g, v, edge_index, frac, node_graph, inv_atom, k_int, k_norm, k_slot, pair_atom, pair_k,
                         edge_weight)
        pooled = torch.zeros(inv_natoms.shape[0], self.hidden, dtype=h.dtype, device=h.device)
        pooled = pooled.index_add_(0, node_graph, h)
        return pooled * inv_natoms.unsqueeze(1).to(h.dtype)  # [B, d] mean over atoms
