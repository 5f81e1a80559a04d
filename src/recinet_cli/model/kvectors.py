"""k-vector sets and the ragged index arrays of the reciprocal block (SPEC §3).

Computed on the fly from each crystal's lattice, batched and vectorised (no Python loop over
crystals), *outside* the network's exported core: the core receives plain tensors, so it
scripts and exports cleanly, and this preparation runs in eager PyTorch (or in DataLoader
workers).

Phases use integer reciprocal-lattice coordinates n and fractional coordinates f:
``theta = 2π n·f``, which equals ``G·r`` for ``G = n1 b1 + n2 b2 + n3 b3``.

* ``sphere`` (default): every G != 0 with ``|G| <= gmax`` (Å^-1), one of each ±G pair
  (the one whose first non-zero n is positive). The set does not depend on the choice of
  cell basis. A crystal may have none (a tiny cell with gmax below its shortest G).
* ``box(N1, N2, N3)``: every n with ``|n_a| <= N_a``, one of each ± pair; the same count
  for every crystal, and the k index is a slot into a per-vector parameter table.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class ReciprocalInputs(NamedTuple):
    """Ragged k-vectors of a batch (K k-vectors in total, P atom×k pairs).

    Attributes:
        k_int: ``[K, 3]`` integer reciprocal coordinates n (as float).
        k_norm: ``[K]`` |G| in Å^-1.
        k_slot: ``[K]`` long, the ``box`` slot of each vector (0 for ``sphere``).
        pair_atom: ``[P]`` long, atom index of each (atom, k) pair of the same crystal.
        pair_k: ``[P]`` long, k index of each pair.
    """

    k_int: Tensor
    k_norm: Tensor
    k_slot: Tensor
    pair_atom: Tensor
    pair_k: Tensor


def reciprocal_lattice(lattice: Tensor) -> Tensor:
    """``[B, 3, 3]`` rows b_i with ``b_i · l_j = 2π δ_ij`` (Å^-1) from rows l_j (Å)."""
    return 2.0 * math.pi * torch.linalg.inv(lattice).transpose(1, 2)


def _ragged_arange(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For counts ``[B]``: (owner ``[sum]``, position within owner ``[sum]``)."""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    return owner, torch.arange(int(counts.sum()), device=counts.device) - starts[owner]


def _upper_half(n: Tensor) -> Tensor:
    """Mask of the n whose first non-zero component is positive (one of each ± pair)."""
    n1, n2, n3 = n.unbind(-1)
    return (n1 > 0) | ((n1 == 0) & (n2 > 0)) | ((n1 == 0) & (n2 == 0) & (n3 > 0))


def _decode_box(local: Tensor, half: Tensor) -> Tensor:
    """Row-major index within a box of half-widths ``half [*, 3]`` -> integer vector n."""
    w = 2 * half + 1
    i1 = local // (w[:, 1] * w[:, 2])
    rem = local % (w[:, 1] * w[:, 2])
    return torch.stack((i1 - half[:, 0], rem // w[:, 2] - half[:, 1], rem % w[:, 2] - half[:, 2]), -1)


def box_vectors(half: tuple[int, int, int]) -> Tensor:
    """``[K_box, 3]`` long: the fixed ``box`` k-set (upper half, row-major order)."""
    h = torch.tensor([half], dtype=torch.long)
    total = int(torch.prod(2 * h + 1))
    n = _decode_box(torch.arange(total), h.expand(total, 3))
    return n[_upper_half(n)]


def kvector_set(
    lattice: Tensor, kset: str, gmax: float, box: tuple[int, int, int]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """k-vectors of every crystal of a batch.

    Args:
        lattice: ``[B, 3, 3]`` lattice rows in Å (any float dtype; computed in float64).

    Returns:
        ``(n [K,3] long, |G| [K] float64, crystal [K] long, slot [K] long)``, grouped by
        crystal in batch order.
    """
    lat = lattice.to(torch.float64)
    recip = reciprocal_lattice(lat)  # [B, 3, 3]
    n_graphs = lat.shape[0]
    if kset == "box":
        nb = box_vectors(box).to(lat.device)  # [Kb, 3]
        kb = nb.shape[0]
        crystal = torch.arange(n_graphs, device=lat.device).repeat_interleave(kb)
        n = nb.repeat(n_graphs, 1)
        slot = torch.arange(kb, device=lat.device).repeat(n_graphs)
    else:
        # |n_a| = |G · l_a| / 2π <= gmax |l_a| / 2π bounds the candidate box of each crystal
        half = torch.floor(gmax * torch.linalg.norm(lat, dim=2) / (2 * math.pi)).long()  # [B, 3]
        sizes = torch.prod(2 * half + 1, dim=1)
        crystal, local = _ragged_arange(sizes)
        n = _decode_box(local, half[crystal])
        g = torch.einsum("ki,kij->kj", n.to(torch.float64), recip[crystal])
        keep = _upper_half(n) & (torch.linalg.norm(g, dim=1) <= gmax)
        n, crystal = n[keep], crystal[keep]
        slot = torch.zeros_like(crystal)
    norm = torch.linalg.norm(torch.einsum("ki,kij->kj", n.to(torch.float64), recip[crystal]), dim=1)
    return n, norm, crystal, slot


def reciprocal_inputs(
    lattice: Tensor, node_graph: Tensor, kset: str, gmax: float, box: tuple[int, int, int]
) -> ReciprocalInputs:
    """The k-vectors and the (atom, k) pairs of a batch, as index arrays (no padding).

    Args:
        lattice: ``[B, 3, 3]`` Å.
        node_graph: ``[N]`` long, crystal of each atom, sorted (PyG ``batch``).

    Returns:
        :class:`ReciprocalInputs` with ``P = Σ_m N_m K_m`` pairs.
    """
    n, norm, crystal, slot = kvector_set(lattice, kset, gmax, box)
    n_graphs = lattice.shape[0]
    atoms_per = torch.bincount(node_graph, minlength=n_graphs)  # [B]
    ks_per = torch.bincount(crystal, minlength=n_graphs)  # [B]
    atom_start = torch.cumsum(atoms_per, 0) - atoms_per
    k_start = torch.cumsum(ks_per, 0) - ks_per
    owner, local = _ragged_arange(atoms_per * ks_per)
    k_den = ks_per[owner].clamp(min=1)
    pair_atom = atom_start[owner] + local // k_den
    pair_k = k_start[owner] + local % k_den
    dtype = lattice.dtype if lattice.is_floating_point() else torch.float32
    return ReciprocalInputs(n.to(dtype), norm.to(dtype), slot, pair_atom, pair_k)
