"""The reciprocal (long-range) block of ReciNet (SPEC §3, paper eq. 8-10)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recinet_cli.model.embedding import RBFExpansion
from recinet_cli.model.linear import BucketedLinear


class SphereFilter(nn.Module):
    """``w(G) = MLP(RBF(|G|)) · env(|G|)``: a per-channel filter of |G| only.

    env is a cosine cutoff reaching 0 at gmax. Shapes: ``k_norm [K]`` -> ``[K, d]``.
    """

    def __init__(self, hidden: int, gmax: float, bins: int) -> None:
        super().__init__()
        self.gmax = float(gmax)
        self.rbf = RBFExpansion(0.0, gmax, max(bins, 2))
        self.mlp = nn.Sequential(BucketedLinear(max(bins, 2), hidden), nn.SiLU(), BucketedLinear(hidden, hidden))

    def forward(self, k_norm: Tensor, k_slot: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.of_norms(k_norm)
        return self._per_distinct_norm(k_norm)

    def of_norms(self, k_norm: Tensor) -> Tensor:
        """``[K] -> [K, d]``: the filter of each |G|."""
        env = 0.5 * (torch.cos(math.pi * (k_norm / self.gmax).clamp(max=1.0)) + 1.0)  # [K]
        return self.mlp(self.rbf(k_norm)) * env.unsqueeze(1)

    @torch.jit.unused
    def _per_distinct_norm(self, k_norm: Tensor) -> Tensor:
        """The same values, with the MLP run once per distinct |G| (symmetric crystals have
        many k-vectors of equal length: about half of them are distinct on jdft2d batches)."""
        if torch.compiler.is_compiling():
            return self.of_norms(k_norm)
        distinct, inverse = torch.unique(k_norm, return_inverse=True)
        return self.of_norms(distinct)[inverse]

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
        self.mix = BucketedLinear(hidden, hidden, bias=False)  # W_mix (d x d)

    def forward(
        self,
        g: Tensor,
        frac: Tensor,
        node_graph: Tensor,
        inv_natoms: Tensor,
        k_int: Tensor,
        k_norm: Tensor,
        k_slot: Tensor,
        pair_atom: Tensor,
        pair_k: Tensor,
    ) -> Tensor:
        args = (g.float(), frac, inv_natoms, k_int, k_norm, k_slot, pair_atom, pair_k)
        if torch.jit.is_scripting():
            total = self.transform_pairs(*args)
        else:
            total = self._transform_eager(node_graph, *args)
        return self.mix(total.to(g.dtype))

    @torch.jit.unused
    def _transform_eager(
        self, node_graph: Tensor, g: Tensor, frac: Tensor, inv_natoms: Tensor, k_int: Tensor,
        k_norm: Tensor, k_slot: Tensor, pair_atom: Tensor, pair_k: Tensor,
    ) -> Tensor:
        """Autocast off for the phases and sums (they stay float32; the |G| filter MLP runs in
        the ambient precision); dense per-crystal-group matmuls in eager mode, the pair-list
        form while compiling (same result, see the tests)."""
        if torch.compiler.is_compiling():
            with torch.autocast(device_type=g.device.type, enabled=False):
                return self.transform_pairs(g, frac, inv_natoms, k_int, k_norm, k_slot, pair_atom, pair_k)
        w_all = self.filter(k_norm.float(), k_slot).float()  # [K, d]
        with torch.autocast(device_type=g.device.type, enabled=False):
            return self.transform_dense(node_graph, g, frac, inv_natoms, k_int, k_norm, k_slot, pair_atom, w_all)

    def transform_pairs(
        self, g: Tensor, frac: Tensor, inv_natoms: Tensor, k_int: Tensor, k_norm: Tensor,
        k_slot: Tensor, pair_atom: Tensor, pair_k: Tensor,
    ) -> Tensor:
        """Pair-list form: gathers and scatters over the P (atom, k) pairs, ``[P, d]`` memory.

        Used by the scripted and exported network (no data-dependent Python control flow).
        ``g [N, d]`` -> ``[N, d]`` (before W_mix), float32.
        """
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

    @torch.jit.unused
    def transform_dense(
        self, node_graph: Tensor, g: Tensor, frac: Tensor, inv_natoms: Tensor, k_int: Tensor,
        k_norm: Tensor, k_slot: Tensor, pair_atom: Tensor, w_all: Tensor | None = None,
    ) -> Tensor:
        """Dense form: per group of consecutive crystals, ``[N_g, K_g]`` cos/sin matrices
        (zero between different crystals) and matrix products, ``C = cosᵀ (h/N)``,
        ``out = cos (w∘C) + sin (w∘S)``.

        The same arithmetic as :meth:`transform_pairs` without its ``[P, d]`` temporaries:
        a 500-atom cell runs on BLAS instead of gathers. Groups are formed so that the
        zero blocks never cost more than 8x the useful work (see :func:`crystal_groups`).
        ``w_all [K, d]``: the filter values, if already computed.
        """
        n_graphs = int(node_graph.max().item()) + 1 if node_graph.numel() else 0
        atoms_per = torch.bincount(node_graph, minlength=n_graphs)
        ks_per = torch.bincount(node_graph[pair_atom], minlength=n_graphs) // atoms_per.clamp(min=1)
        k_graph = torch.repeat_interleave(torch.arange(n_graphs, device=g.device), ks_per)  # [K]
        if w_all is None:
            w_all = self.filter(k_norm.float(), k_slot)  # [K, d]
        pieces = []
        for a0, a1, k0, k1 in crystal_groups(atoms_per.tolist(), ks_per.tolist()):
            if k1 == k0:
                pieces.append(torch.zeros(a1 - a0, self.hidden, device=g.device))
                continue
            theta = 2.0 * math.pi * frac[a0:a1].float() @ k_int[k0:k1].float().T  # [Na, Kg]
            same = node_graph[a0:a1].unsqueeze(1) == k_graph[k0:k1].unsqueeze(0)  # block diagonal
            cos = torch.cos(theta) * same
            sin = torch.sin(theta) * same
            hs = g[a0:a1] * inv_natoms[a0:a1].float().unsqueeze(1)  # [Na, d]
            w = w_all[k0:k1]
            pieces.append(cos @ (w * (cos.T @ hs)) + sin @ (w * (sin.T @ hs)))  # [Na, d]
        if not pieces:
            return torch.zeros_like(g)
        return torch.cat(pieces, dim=0)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(hidden={self.hidden}, {self.filter})"


def crystal_groups(atoms: list[int], ks: list[int], waste: float = 8.0, small: int = 65536) -> list[tuple[int, int, int, int]]:
    """Split consecutive crystals into groups for :meth:`ReciprocalUpdate.transform_dense`.

    A crystal joins the current group while the group's dense size ``N_g·K_g`` stays below
    ``small`` entries or below ``waste`` times its useful ``Σ N_m·K_m``.

    Returns:
        ``(atom_start, atom_stop, k_start, k_stop)`` per group, covering every atom.
    """
    groups: list[tuple[int, int, int, int]] = []
    a = k = 0
    ga, gk, useful = a, k, 0
    for n_m, k_m in zip(atoms, ks):
        na, nk, nu = a + n_m - ga, k + k_m - gk, useful + n_m * k_m
        if a > ga and na * nk > max(small, waste * nu):
            groups.append((ga, a, gk, k))
            ga, gk, useful = a, k, 0
            nu = n_m * k_m
        useful = nu
        a += n_m
        k += k_m
    if a > ga:
        groups.append((ga, a, gk, k))
    return groups

