"""The PotNet base convolution used as ReciNet's local layer (docs/model.md, "Local layer"; paper B.3)."""

from typing import Optional

import torch
from torch import Tensor, nn

from recinet_cli.model.edges import weighted_batch_norm
from recinet_cli.model.linear import BucketedLinear, bucketed_linear


def _mlp(d_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(BucketedLinear(d_in, d), nn.SiLU(), BucketedLinear(d, d))


class PotNetConv(nn.Module):
    r"""Gated edge convolution.

    .. math::
        z_{ij} = [h_i \| h_j \| v_{ij}],\quad
        \beta_{ij} = \sigma(\mathrm{BN}(\mathrm{MLP}_1(z_{ij}))),\quad
        h_i' = \mathrm{ReLU}\big(h_i + \mathrm{BN}\big(\textstyle\sum_{j \to i}
               \beta_{ij} \odot \mathrm{MLP}_2(z_{ij})\big)\big)

    Messages flow from the edge source j (``edge_index[0]``) to the target i
    (``edge_index[1]``); each MLP is Linear(3d, d) -> SiLU -> Linear(d, d).

    Factorised evaluation (same parameters, same function): the first layer of each MLP is
    linear in the concatenation, ``W z = W_i h_i + W_j h_j + W_v v_ij``, so the node terms
    are computed once per atom (one ``[N, d] @ [d, 4d]`` product for both MLPs) and gathered
    per edge, and only ``W_v v_ij`` (one ``[E, d] @ [d, 2d]`` product for both MLPs) runs per
    edge. The per-edge work of the first layer drops from ``2·3d·d`` to ``2·d·d``
    multiply-adds; :meth:`forward_concat` keeps the literal form as the reference.

    ``edge_weight [E]`` (optional): the multiplicity of each edge when duplicate edges were
    merged (:func:`~recinet_cli.model.edges.merge_duplicate_edges`): the gate BatchNorm
    statistics and the message sum count edge e ``edge_weight[e]`` times, so the result
    equals the full multigraph's.

    Args:
        hidden: feature width d.

    Shapes:
        ``h [N, d]``, ``edge_attr [E, d]``, ``edge_index [2, E]``, ``edge_weight [E]`` or
        None -> ``[N, d]``.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gate_mlp = _mlp(3 * hidden, hidden)
        self.msg_mlp = _mlp(3 * hidden, hidden)
        self.gate_bn = nn.BatchNorm1d(hidden)
        self.out_bn = nn.BatchNorm1d(hidden)

    def forward(self, h: Tensor, edge_attr: Tensor, edge_index: Tensor,
                edge_weight: Optional[Tensor] = None) -> Tensor:  # noqa: UP045 (TorchScript)
        src, dst = edge_index[0], edge_index[1]
        d = self.hidden
        wg: Tensor = self.gate_mlp[0].weight  # [d, 3d]: columns (h_i, h_j, v_ij)
        wm: Tensor = self.msg_mlp[0].weight
        bg: Tensor = self.gate_mlp[0].bias
        bm: Tensor = self.msg_mlp[0].bias
        # node terms of both MLPs: rows (gate W_i, msg W_i, gate W_j, msg W_j)
        w_node = torch.cat((wg[:, :d], wm[:, :d], wg[:, d:2 * d], wm[:, d:2 * d]), dim=0)  # [4d, d]
        w_edge = torch.cat((wg[:, 2 * d:], wm[:, 2 * d:]), dim=0)  # [2d, d]
        node = bucketed_linear(h, w_node, None)  # [N, 4d]
        pre = bucketed_linear(edge_attr, w_edge, torch.cat((bg, bm)))  # [E, 2d]
        # [E, 2d]: W_i h_i + W_j h_j + W_v v + b
        pre = pre + node[:, : 2 * d].index_select(0, dst) + node[:, 2 * d:].index_select(0, src)
        act = torch.nn.functional.silu(pre)
        gate = self.gate_mlp[2](act[:, :d])  # [E, d]
        return self._gated_sum(h, gate, act[:, d:], dst, edge_weight)

    def _gated_sum(self, h: Tensor, gate: Tensor, msg_hidden: Tensor, dst: Tensor,
                   edge_weight: Optional[Tensor]) -> Tensor:  # noqa: UP045 (TorchScript)
        """``ReLU(h + BN(Σ_{j→i} σ(BN(gate)) ⊙ MLP_2's last layer(msg_hidden)))`` (weighted by
        the edge multiplicity when given)."""
        if edge_weight is None:
            beta = torch.sigmoid(self.gate_bn(gate))
        else:
            beta = torch.sigmoid(self._weighted_gate_bn(gate, edge_weight)) * edge_weight.unsqueeze(1)
        msg = beta * self.msg_mlp[2](msg_hidden)  # [E, d] (times the multiplicity)
        return self._aggregate(h, msg, dst)

    @torch.jit.unused
    def _weighted_gate_bn(self, gate: Tensor, edge_weight: Tensor) -> Tensor:
        return weighted_batch_norm(self.gate_bn, gate, edge_weight)

    @torch.jit.unused
    def forward_concat(self, h: Tensor, edge_attr: Tensor, edge_index: Tensor,
                       edge_weight: Optional[Tensor] = None) -> Tensor:  # noqa: UP045
        """The literal form of the paper (``[E, 3d]`` concatenation); the reference that
        :meth:`forward` equals, kept for tests and the speed benchmark."""
        src, dst = edge_index[0], edge_index[1]
        z = torch.cat((h[dst], h[src], edge_attr), dim=1)  # [E, 3d]: (h_i, h_j, v_ij)
        return self._gated_sum(h, self.gate_mlp(z), torch.nn.functional.silu(self.msg_mlp[0](z)), dst, edge_weight)

    def _aggregate(self, h: Tensor, msg: Tensor, dst: Tensor) -> Tensor:
        """``ReLU(h + BN(Σ_{j→i} msg))``; the sum over edges accumulates in float32."""
        agg = torch.zeros(h.shape, dtype=torch.float32, device=h.device).index_add_(0, dst, msg.float())  # [N, d]
        return torch.relu(h.float() + self.out_bn(agg))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(hidden={self.hidden})"
