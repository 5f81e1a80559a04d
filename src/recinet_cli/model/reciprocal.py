"""The reciprocal (long-range) block of ReciNet (SPEC §3, paper eq. 8-10)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recinet_cli.model.embedding import RBFExpansion


class SphereFilter(nn.Module):
    """``w(G) = MLP(RBF(|G|)) · env(|G|)``: a per-channel filter of |G| only.

    env is a cosine cutoff reaching 0 at gmax. Shapes: ``k_norm [K]`` -> ``[K, d]``.
    """

    def __init__(self, hidden: int, gmax: float, bins: int) -> None:
        super().__init__()
        self.gmax = float(gmax)
        self.rbf = RBFExpansion(0.0, gmax, max(bins, 2))
        self.mlp = nn.Sequential(nn.Linear(max(bins, 2), hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, k_norm: Tensor, k_slot: Tensor) -> Tensor:
        env = 0.5 * (torch.cos(math.pi * (k_norm / self.gmax).clamp(max=1.0)) + 1.0)  # [K]
        return self.mlp(self.rbf(k_norm)) * env.unsqueeze(1)

    def __repr__(self) -> str:
        return f"sphere(gmax={self.gmax:g})"


class BoxFilter(nn.Module):
    """A free parameter per (box k-slot, channel). Shapes: ``k_slot [K]`` -> ``[K, d]``."""

    def __init__(self, hidden: int, n_box: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_box, hidden))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(hidden))

    def forward(self, k_norm: Tensor, k_slot: Tensor) -> Tensor:
        return self.weight[k_slot]

    def __repr__(self) -> str:
        return f"box({self.weight.shape[0]} slots)"


class ReciprocalUpdate(nn.Module):
    r"""Learnable Fourier filter over a crystal's k-vectors.

    .. math::
        C_{Gc} = \frac{1}{N_m}\sum_j h_{jc}\cos\theta_{jG},\quad
        S_{Gc} = \frac{1}{N_m}\sum_j h_{jc}\sin\theta_{jG},\quad
        \tilde h_j = W_\text{mix}\Big(\sum_G w(G) \odot
                     (\cos\theta_{jG}\,C_G + \sin\theta_{jG}\,S_G)\Big)

    with :math:`\theta_{jG} = 2\pi\, n_G \cdot f_j`. ``sphere`` filter:
    :math:`w(G) = \mathrm{MLP}(\mathrm{RBF}(|G|))\cdot\mathrm{env}(|G|)`, env a cosine
    cutoff reaching 0 at gmax, so a vector crossing the sphere's surface changes nothing
    abruptly. ``box`` filter: a free parameter per (k-vector slot, channel).

    Real arithmetic only (cos/sin), no complex dtypes. The phases and the sums over atoms and
    k-vectors run in float32 even under bf16 autocast.

    Args:
        hidden: feature width d.
        kset: ``sphere`` or ``box``.
        gmax: sphere radius (Å^-1).
        filter_rbf: RBF centres on [0, gmax] for the |G| filter.
        n_box: number of box slots (``box`` only).

    Shapes:
        ``g [N, d]``, ``frac [N, 3]``, ``inv_natoms [N]`` (1/N_m of each atom's crystal),
        ``k_int [K, 3]``, ``k_norm [K]``, ``k_slot [K]``, ``pair_atom [P]``, ``pair_k [P]``
        -> ``[N, d]``.
    """

    def __init__(self, hidden: int, kset: str, gmax: float, filter_rbf: int, n_box: int = 0) -> None:
        super().__init__()
        self.hidden = hidden
        self.kset = kset
        self.filter: nn.Module = BoxFilter(hidden, n_box) if kset == "box" else SphereFilter(hidden, gmax, filter_rbf)
        self.mix = nn.Linear(hidden, hidden, bias=False)  # W_mix (d x d)

    def forward(
        self,
        g: Tensor,
        frac: Tensor,
        inv_natoms: Tensor,
        k_int: Tensor,
        k_norm: Tensor,
        k_slot: Tensor,
        pair_atom: Tensor,
        pair_k: Tensor,
    ) -> Tensor:
        args = (g.float(), frac, inv_natoms, k_int, k_norm, k_slot, pair_atom, pair_k)
        if torch.jit.is_scripting():  # noqa: SIM108 - TorchScript drops this branch only in an if
            total = self._transform(*args)
        else:
            total = self._transform_fp32(*args)
        return self.mix(total.to(g.dtype))

    @torch.jit.unused
    def _transform_fp32(
        self, g: Tensor, frac: Tensor, inv_natoms: Tensor, k_int: Tensor, k_norm: Tensor,
        k_slot: Tensor, pair_atom: Tensor, pair_k: Tensor,
    ) -> Tensor:
        """:meth:`_transform` with autocast switched off (phases and sums stay float32)."""
        with torch.autocast(device_type=g.device.type, enabled=False):
            return self._transform(g, frac, inv_natoms, k_int, k_norm, k_slot, pair_atom, pair_k)

    def _transform(
        self, g: Tensor, frac: Tensor, inv_natoms: Tensor, k_int: Tensor, k_norm: Tensor,
        k_slot: Tensor, pair_atom: Tensor, pair_k: Tensor,
    ) -> Tensor:
        """Forward and back transform in float32: ``g [N, d]`` -> ``[N, d]`` (before W_mix)."""
        theta = 2.0 * math.pi * (frac[pair_atom].float() * k_int[pair_k].float()).sum(1)  # [P]
        cos, sin = torch.cos(theta), torch.sin(theta)
        h_pair = g[pair_atom] * inv_natoms[pair_atom].float().unsqueeze(1)  # [P, d]
        n_k = k_int.shape[0]
        c = torch.zeros(n_k, self.hidden, device=g.device).index_add_(0, pair_k, h_pair * cos.unsqueeze(1))
        s = torch.zeros(n_k, self.hidden, device=g.device).index_add_(0, pair_k, h_pair * sin.unsqueeze(1))
        w = self.filter(k_norm.float(), k_slot)  # [K, d]
        wc, ws = w * c, w * s  # [K, d]
        back = cos.unsqueeze(1) * wc[pair_k] + sin.unsqueeze(1) * ws[pair_k]  # [P, d]
        return torch.zeros_like(g).index_add_(0, pair_atom, back)  # [N, d]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(hidden={self.hidden}, {self.filter})"
