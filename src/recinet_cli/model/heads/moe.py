"""``mt-moe`` head: ReciNet-MT's mixture-of-experts decoder (SPEC §5, paper App. C)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from recinet_cli.contracts import HeadPlugin
from recinet_cli.errors import PluginError
from recinet_cli.model.heads import mlp


def _cv_squared(x: Tensor) -> Tensor:
    """Squared coefficient of variation along the last dim, averaged over the rest."""
    return (x.var(dim=-1, unbiased=False) / (x.mean(dim=-1) ** 2 + 1e-10)).mean()


def _normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class MoEDecoder(nn.Module):
    r"""Shared experts, one noisy top-K router per task, task MLP heads.

    For task t: ``logits = x W_t (+ N(0,1) softplus(x W_noise,t) in training)``, keep the
    top K, softmax over them, zero the rest (``gates [B, E]``);
    ``y_t = MLP_t(Σ_e gates_e E_e(x))``.

    The Shazeer et al. (2017) load-balancing loss (``coef * (CV²(importance) + CV²(load))``,
    averaged over tasks) is stored in :attr:`aux_loss` during training; how often each task
    selects each expert is accumulated in the buffer :attr:`expert_counts` ``[T, E]`` (for the
    Figure 4 analysis; reset it with :meth:`reset_counts`).

    Shapes: ``x [B, d]`` -> ``[B, T]``.
    """

    def __init__(
        self, in_dim: int, targets: Sequence[str], n_experts: int = 15, top_k: int = 2, coef: float = 1e-2
    ) -> None:
        super().__init__()
        self.targets = tuple(targets)
        n_tasks = len(self.targets)
        self.n_tasks, self.n_experts, self.top_k, self.coef = n_tasks, n_experts, top_k, float(coef)
        self.experts = nn.ModuleList(mlp(in_dim, in_dim, in_dim) for _ in range(n_experts))
        self.w_gate = nn.Parameter(torch.zeros(n_tasks, in_dim, n_experts))
        self.w_noise = nn.Parameter(torch.zeros(n_tasks, in_dim, n_experts))
        self.task_heads = nn.ModuleList(mlp(in_dim, in_dim, 1) for _ in range(n_tasks))
        self.register_buffer("expert_counts", torch.zeros(n_tasks, n_experts))
        self.aux_loss = torch.zeros(())

    def reset_counts(self) -> None:
        """Zero the expert-selection counts :attr:`expert_counts`."""
        self.expert_counts.zero_()

    def gates(self, x: Tensor) -> Tensor:
        """``[T, B, E]`` sparse gates (K non-zeros per row summing to one)."""
        return self._route(x)[0]

    def _route(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(gates [T, B, E], chosen [T, B, K])``: the sparse gates and the selected experts
        (counted from the indices, so a gate that underflows to 0 still counts as chosen)."""
        clean = torch.einsum("bd,tde->tbe", x, self.w_gate)  # [T, B, E]
        if self.training:
            noise_std = torch.nn.functional.softplus(torch.einsum("bd,tde->tbe", x, self.w_noise)) + 1e-2
            noisy = clean + torch.randn_like(clean) * noise_std
        else:
            noise_std = torch.ones_like(clean)
            noisy = clean
        k = self.top_k
        top_val, top_idx = noisy.topk(min(k + 1, self.n_experts), dim=-1)  # [T, B, K+1]
        gates = torch.zeros_like(noisy).scatter(-1, top_idx[..., :k], torch.softmax(top_val[..., :k], dim=-1))
        if self.training:
            importance = gates.sum(1)  # [T, E]
            if k < self.n_experts:
                # smooth estimate of how often each expert lands in the top K (Shazeer 2017)
                thr_in = top_val[..., k : k + 1]  # (K+1)-th value: threshold if the expert is in
                thr_out = top_val[..., k - 1 : k]  # K-th value: threshold if it is out
                is_in = noisy > thr_in
                prob = torch.where(
                    is_in, _normal_cdf((clean - thr_in) / noise_std), _normal_cdf((clean - thr_out) / noise_std)
                )
                load = prob.sum(1)  # [T, E]
            else:
                load = importance
            self.aux_loss = self.coef * (_cv_squared(importance) + _cv_squared(load))
        return gates, top_idx[..., :k]

    def forward(self, x: Tensor) -> Tensor:
        gates, chosen = self._route(x)  # [T, B, E], [T, B, K]
        # counted from the indices (never tracked by autograd); no `torch.no_grad()` block
        # here: it becomes a set_grad_enabled node that torch.export.load cannot read back
        picked = torch.zeros_like(gates, dtype=self.expert_counts.dtype).scatter(-1, chosen, 1.0)
        self.expert_counts += picked.sum(1)  # [T, E]
        expert_out = torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, E, d]
        # batched matmul rather than einsum: einsum's internal reshape guards on B != 1,
        # which breaks torch.export with a dynamic number of crystals
        mixed = torch.bmm(gates.transpose(0, 1), expert_out).transpose(0, 1)  # [T, B, d]
        outs = [head(mixed[t]) for t, head in enumerate(self.task_heads)]
        return torch.cat(outs, dim=1)  # [B, T]


class MoEHead(HeadPlugin):
    """ReciNet-MT decoder: 15 experts, noisy top-2 routing per task, load balancing."""

    name = "mt-moe"
    description = "Mixture-of-experts multi-task decoder (ReciNet-MT)"

    @dataclass(frozen=True)
    class Options:
        n_experts: int = 15
        top_k: int = 2
        balance_coef: float = 1e-2

    def build(self, in_dim: int, targets: Sequence[str], options: object) -> nn.Module:
        if options is None:
            opts = MoEHead.Options()
        elif isinstance(options, Mapping):
            opts = self.parse_options(options)
        elif isinstance(options, MoEHead.Options):
            opts = options
        else:
            raise PluginError(f"head 'mt-moe': options must be MoEHead.Options, got {type(options).__name__}")

        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(opts.n_experts) or opts.n_experts < 1:
            raise PluginError(f"head 'mt-moe': n_experts must be an integer >= 1, got {opts.n_experts!r}")
        if not is_int(opts.top_k) or not 1 <= opts.top_k <= opts.n_experts:
            raise PluginError(f"head 'mt-moe': top_k must be an integer in 1..n_experts, got {opts.top_k!r}")
        coef = opts.balance_coef
        if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not 0 <= coef < math.inf:
            raise PluginError(f"head 'mt-moe': balance_coef must be a number >= 0, got {coef!r}")
        return MoEDecoder(in_dim, targets, opts.n_experts, opts.top_k, float(coef))
