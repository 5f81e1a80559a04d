#!/usr/bin/env python
"""Run an exported recinet model with nothing but NumPy and PyTorch (or ONNX Runtime).

``recinet export`` writes a model as a TorchScript file (``.pt``), a ``torch.export`` program
(``.pt2``) or an ONNX file (``.onnx``). The exported network takes eleven graph tensors and
returns ``[B, T]`` properties in physical units; this script builds those tensors from crystal
structures exactly as recinet does (same graph, same k-vectors, same dtypes and casts), so a
deployment needs neither recinet nor pymatgen. Copy this one file; it depends on NumPy and,
for ``.pt``/``.pt2``, PyTorch, or, for ``.onnx``, ONNX Runtime (PyTorch is then not needed).

Command line::

    python recinet_standalone.py MODEL_FILE POSCAR [POSCAR ...] [--batch-size 64] [-o out.csv]

prints a CSV: ``id`` (the file name without ``.vasp``/``.poscar``), then one column per target,
``name (unit)``. POSCARs must be VASP 5 files (species line), Direct or Cartesian, with any
scale factor (a negative one is the cell volume).

Library::

    import recinet_standalone as rs

    run, meta = rs.load_model("model.pt")              # run(inputs) -> np.ndarray [B, T]
    crystal = rs.read_poscar("POSCAR")                  # (lattice [3,3] Å rows, frac [N,3], Z [N])
    inputs = rs.build_inputs([crystal], meta)           # dict of the 11 torch tensors
    y = run(inputs)
    y = rs.predict("model.pt", [crystal, crystal2])     # the same in one call, batched

See ``docs/deploy.md`` of the recinet repository for what each tensor holds.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "INPUT_NAMES",
    "StandaloneError",
    "build_graph",
    "build_inputs",
    "build_inputs_numpy",
    "collate",
    "edge_lengths",
    "featurize",
    "kvectors",
    "load_model",
    "predict",
    "read_metadata",
    "read_poscar",
    "structure_id",
    "wrap_fractional",
]

#: The exported network's inputs, in positional order.
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

#: dtype of each input when the artifact's metadata does not say otherwise.
DEFAULT_DTYPES = {
    "atomic_numbers": "int64",
    "edge_index": "int64",
    "edge_len": "float32",
    "node_graph": "int64",
    "inv_natoms": "float32",
    "frac": "float32",
    "k_int": "float32",
    "k_norm": "float32",
    "k_slot": "int64",
    "pair_atom": "int64",
    "pair_k": "int64",
}

#: The graph rule this script implements (the artifact's ``featurizer.algorithm``).
ALGORITHM = "knn-undirected-multigraph/v1"
#: Artifact metadata format this script reads.
FORMAT = "recinet-export"
FORMAT_VERSION = 1

#: Element symbols, Z = 1..100 (the range of the model's embedding table).
ELEMENTS = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne",
    "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca",
    "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr",
    "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn",
    "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb",
    "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg",
    "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th",
    "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm",
)  # fmt: skip
SYMBOL_TO_Z = {symbol: z for z, symbol in enumerate(ELEMENTS, start=1)}

#: Volume per atom (Å^3) below which a cell counts as degenerate (as recinet).
MIN_VOLUME = 1e-3


class StandaloneError(ValueError):
    """A structure, a file or an artifact that cannot be used (one-line reason)."""


# --------------------------------------------------------------------------------------
# Structures
# --------------------------------------------------------------------------------------


def wrap_fractional(frac: np.ndarray) -> np.ndarray:
    """Fractional coordinates wrapped into ``[0, 1)`` exactly as recinet wraps them."""
    frac = np.asarray(frac, dtype=np.float64)
    wrapped = frac - np.floor(frac)
    wrapped[wrapped >= 1.0] = 0.0
    return wrapped


def atomic_numbers_of(species: Sequence[Any]) -> np.ndarray:
    """``[N]`` int64 atomic numbers from atomic numbers or element symbols."""
    out = []
    for s in species:
        if isinstance(s, str):
            if s not in SYMBOL_TO_Z:
                raise StandaloneError(f"unknown element symbol {s!r} (this model covers H..Fm, Z 1-100)")
            out.append(SYMBOL_TO_Z[s])
        else:
            out.append(int(s))
    return np.asarray(out, dtype=np.int64)


def check_crystal(lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray) -> None:
    """Raise :class:`StandaloneError` if recinet would refuse the crystal (before the graph)."""
    if len(numbers) == 0:
        raise StandaloneError("structure has no atoms")
    if len(frac) != len(numbers):
        raise StandaloneError(f"{len(frac)} coordinates but {len(numbers)} species")
    if not (np.isfinite(lattice).all() and np.isfinite(frac).all()):
        raise StandaloneError("lattice or coordinates contain NaN or infinite values")
    lengths = np.linalg.norm(lattice, axis=1)
    if (lengths < 1e-6).any():
        raise StandaloneError(f"degenerate lattice: vector lengths {np.round(lengths, 4).tolist()} Å")
    volume = abs(float(np.linalg.det(lattice)))
    if volume < MIN_VOLUME or volume / float(np.prod(lengths)) < 1e-6:
        raise StandaloneError(f"degenerate lattice: cell volume {volume:.3g} Å^3")
    bad = numbers[(numbers < 1) | (numbers > len(ELEMENTS))]
    if len(bad):
        raise StandaloneError(f"element Z={int(bad[0])} is outside the embedding table (Z 1-{len(ELEMENTS)})")


def _as_crystal(crystal: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lattice float64 [3,3], wrapped frac float64 [N,3], numbers int64 [N]), validated."""
    if len(crystal) != 3:
        raise StandaloneError("a crystal is (lattice [3,3], frac [N,3], atomic_numbers [N])")
    lattice = np.ascontiguousarray(crystal[0], dtype=np.float64).reshape(3, 3)
    frac = np.ascontiguousarray(crystal[1], dtype=np.float64).reshape(-1, 3)
    numbers = atomic_numbers_of(list(np.asarray(crystal[2]).reshape(-1).tolist()))
    check_crystal(lattice, frac, numbers)
    return lattice, wrap_fractional(frac), numbers


def _open_text(path: str) -> str:
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        return fh.read()


def structure_id(path: str) -> str:
    """The id recinet gives a structure file: its name without ``.gz`` and ``.vasp``/``.poscar``."""
    name = os.path.basename(path)
    if name.lower().endswith(".gz"):
        name = name[:-3]
    stem, suffix = os.path.splitext(name)
    return stem if suffix.lower() in (".vasp", ".poscar") else name


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def read_poscar(path_or_text: str, *, is_text: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a VASP 5 POSCAR/CONTCAR.

    Args:
        path_or_text: a file path (``.gz`` allowed), or the file's text with ``is_text=True``.

    Returns:
        ``(lattice [3,3] Å rows, frac [N,3] as written (not wrapped), atomic numbers [N])``.

    The species line is required (VASP 4 files do not name their elements). A negative scale
    factor is the cell volume in Å^3; Cartesian coordinates are scaled like the lattice.
    """
    text = path_or_text if is_text else _open_text(path_or_text)
    # Lines are used by position; what follows the coordinates (velocities, ...) is ignored.
    # '#' starts a comment.
    lines = [ln.split("#", 1)[0].strip() for ln in text.replace("\r\n", "\n").split("\n")]
    try:
        scale = float(lines[1].split()[0])
        lattice = np.array([[float(x) for x in lines[i].split()[:3]] for i in (2, 3, 4)], dtype=np.float64)
        if lattice.shape != (3, 3):
            raise ValueError("lattice lines need three numbers each")
        # A negative scale is the volume (Å^3); Cartesian coordinates scale like the lattice.
        factor = (-scale / abs(np.linalg.det(lattice))) ** (1 / 3) if scale < 0 else scale
        lattice *= factor
        if _is_int(lines[5].split()[0]):
            raise StandaloneError("POSCAR has no species line (VASP 4 format): element symbols are unknown")
        # Species may span several lines (VASP writes more than 20 groups on continuation lines).
        n_lines = 1
        while not _is_int(lines[5 + n_lines].split()[0]):
            n_lines += 1
        symbols = [tok.split("/")[0].split("_")[0] for ln in lines[5:5 + n_lines] for tok in ln.split()]
        counts = [int(tok) for ln in lines[5 + n_lines:5 + 2 * n_lines] for tok in ln.split()]
        if len(symbols) != len(counts):
            raise ValueError(f"{len(symbols)} species but {len(counts)} counts")
        ipos = 5 + 2 * n_lines
        mode = lines[ipos].split()[0]
        if mode[0] in "sS":  # Selective dynamics
            ipos += 1
            mode = lines[ipos].split()[0]
        cartesian = mode[0] in "cCkK"
        n_sites = sum(counts)
        coords = np.array(
            [[float(x) for x in lines[ipos + 1 + i].split()[:3]] for i in range(n_sites)], dtype=np.float64
        ).reshape(n_sites, 3)
    except StandaloneError:
        raise
    except (IndexError, ValueError) as exc:
        raise StandaloneError(f"cannot parse POSCAR: {exc}") from None
    numbers = atomic_numbers_of([s for s, c in zip(symbols, counts) for _ in range(c)])
    frac = np.dot(coords * factor, np.linalg.inv(lattice)) if cartesian else coords
    return lattice, frac, numbers


# --------------------------------------------------------------------------------------
# The periodic kNN graph (recinet's knn-undirected-multigraph/v1)
# --------------------------------------------------------------------------------------


def _candidates(
    lattice: np.ndarray, frac: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All (i, j, image n, d) with ``d = |r_j + n·L - r_i| <= radius``, the trivial self pair
    (i, i, 0) removed. Brute force over every lattice image that can reach the sphere."""
    n_atoms = len(frac)
    cart = frac @ lattice
    # |(Δf + n)·L| >= |Δf_a + n_a| d_a with d_a the interplanar spacing 1/|b_a / 2π|.
    inv_spacing = np.linalg.norm(np.linalg.inv(lattice), axis=0)  # [3] |b_a| / 2π
    span = frac.max(axis=0) - frac.min(axis=0)
    reach = radius * inv_spacing + span  # |n_a| <= reach_a can matter
    nmax = np.ceil(reach + 1e-9).astype(np.int64)
    axes = [np.arange(-m, m + 1) for m in nmax]
    images = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    # Drop images whose every translate lies beyond the radius along some plane normal.
    lower = np.max((np.abs(images) - span) * (1.0 / inv_spacing), axis=1)
    images = images[lower <= radius * (1 + 1e-12)]
    offsets = images @ lattice  # [M, 3]
    out_i, out_j, out_n, out_d = [], [], [], []
    # Work in blocks of (images x source atoms) of at most ~2M pair distances each.
    rows = max(1, min(n_atoms, 2_000_000 // max(n_atoms, 1)))
    per = max(1, 2_000_000 // (rows * max(n_atoms, 1)))
    zero = int(np.flatnonzero(~images.any(axis=1))[0])  # the image n = 0 (never pruned)
    for a in range(0, n_atoms, rows):
        src = cart[a:a + rows]
        for start in range(0, len(images), per):
            off = offsets[start:start + per]
            diff = cart[None, None, :, :] + off[:, None, None, :] - src[None, :, None, :]  # [m, i, j, 3]
            d = np.sqrt(np.einsum("mijx,mijx->mij", diff, diff))
            mask = d <= radius
            if start <= zero < start + len(off):  # drop the trivial pairs (i, i, 0)
                local = np.arange(len(src))
                mask[zero - start, local, a + local] = False
            m, i, j = np.nonzero(mask)
            out_i.append(a + i)
            out_j.append(j)
            out_n.append(images[start + m])
            out_d.append(d[m, i, j])
    return (
        np.concatenate(out_i).astype(np.int64),
        np.concatenate(out_j).astype(np.int64),
        np.concatenate(out_n).astype(np.int64).reshape(-1, 3),
        np.concatenate(out_d),
    )


def build_graph(
    lattice: np.ndarray,
    frac: np.ndarray,
    cutoff: float = 4.0,
    max_neighbors: int = 16,
    tie_tol: float = 1e-8,
    min_dist: float = 0.15,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """recinet's periodic k-nearest-neighbour multigraph of one crystal.

    Every atom i keeps each (j, image n) whose distance is at most its ``max_neighbors``-th
    smallest distance + ``tie_tol`` (its own periodic images included, the trivial self pair
    excluded); each kept (i, j, n) gives the edges i->j (image n) and j->i (image -n); edges are
    sorted by (source, target, image).

    Args:
        lattice: ``[3, 3]`` lattice vectors as rows, Å.
        frac: ``[N, 3]`` fractional coordinates (recinet passes them wrapped into [0, 1)).
        cutoff: initial search radius (Å); the edges do not depend on it.

    Returns:
        ``(src [E], dst [E], image [E, 3])`` int64; the edge vector is
        ``(frac[dst] + image - frac[src]) @ lattice``.

    Raises:
        StandaloneError: two atoms (or an atom and its image) at most ``min_dist`` Å apart.
    """
    lattice = np.ascontiguousarray(lattice, dtype=np.float64)
    frac = np.ascontiguousarray(frac, dtype=np.float64)
    n_atoms = len(frac)
    if n_atoms == 0:
        raise StandaloneError("structure has no atoms")
    k = int(max_neighbors)
    volume = abs(float(np.linalg.det(lattice)))
    expected = np.cbrt(3.0 * (k + 1) * volume / (4.0 * np.pi * max(n_atoms, 1)))
    radius = max(float(cutoff), 1.1 * float(expected))
    first = True
    for _ in range(64):
        i, j, img, d = _candidates(lattice, frac, radius)
        if first:
            close = np.flatnonzero(d <= min_dist)
            if len(close):
                c = close[np.argmin(d[close])]
                a, b = int(i[c]), int(j[c])
                if a == b:
                    raise StandaloneError(f"atom {a} overlaps its own periodic image ({d[c]:.3f} Å)")
                raise StandaloneError(
                    f"overlapping atoms {min(a, b)} and {max(a, b)}: {d[c]:.3f} Å apart (minimum {min_dist} Å)"
                )
            first = False
        counts = np.bincount(i, minlength=n_atoms)
        if counts.min() >= k:
            order = np.lexsort((d, i))
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            d_k = d[order][starts + k - 1]  # k-th smallest distance of each atom
            if (d_k + tie_tol <= radius).all():
                break
            radius = float(d_k.max() + tie_tol) * 1.0001
            continue
        radius *= float(np.clip(np.cbrt(k / max(int(counts.min()), 1)) * 1.1, 1.25, 2.0))
    else:
        raise StandaloneError("neighbour search did not converge (degenerate lattice?)")
    keep = d <= d_k[i] + tie_tol
    i, j, img = i[keep], j[keep], img[keep]
    src = np.concatenate((i, j))
    dst = np.concatenate((j, i))
    image = np.concatenate((img, -img))
    order = np.lexsort((image[:, 2], image[:, 1], image[:, 0], dst, src))
    return src[order], dst[order], image[order]


# --------------------------------------------------------------------------------------
# k-vectors of the reciprocal stream
# --------------------------------------------------------------------------------------


def _upper_half(n: np.ndarray) -> np.ndarray:
    """The n whose first non-zero component is positive (one of each ± pair)."""
    n1, n2, n3 = n[:, 0], n[:, 1], n[:, 2]
    return (n1 > 0) | ((n1 == 0) & (n2 > 0)) | ((n1 == 0) & (n2 == 0) & (n3 > 0))


def _box(half: Sequence[int]) -> np.ndarray:
    """``[M, 3]`` every n with ``|n_a| <= half_a``, row-major (n1 slowest)."""
    axes = [np.arange(-int(h), int(h) + 1) for h in half]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def kvectors(
    lattice: np.ndarray, kset: str, gmax: float, box: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-vectors of one crystal, as recinet computes them.

    Args:
        lattice: ``[3, 3]`` Å; recinet uses the float32-rounded lattice (``build_inputs`` passes it).
        kset: ``sphere`` (every G != 0 with |G| <= gmax, one of each ±G) or ``box``.

    Returns:
        ``(n [K, 3] int64, |G| [K] float64 Å^-1, slot [K] int64)``.
    """
    lat = np.asarray(lattice, dtype=np.float64)
    recip = 2.0 * math.pi * np.linalg.inv(lat).T  # rows b_i, b_i·l_j = 2π δ_ij
    if kset == "box":
        n = _box(box)
        n = n[_upper_half(n)]
        slot = np.arange(len(n), dtype=np.int64)
    elif kset == "sphere":
        half = np.floor(gmax * np.linalg.norm(lat, axis=1) / (2 * math.pi)).astype(np.int64)
        n = _box(half)
        g = n.astype(np.float64) @ recip
        n = n[_upper_half(n) & (np.linalg.norm(g, axis=1) <= gmax)]
        slot = np.zeros(len(n), dtype=np.int64)
    else:
        raise StandaloneError(f"unknown k-set {kset!r} (expected 'sphere' or 'box')")
    norm = np.linalg.norm(n.astype(np.float64) @ recip, axis=1)
    return n.astype(np.int64), norm, slot


# --------------------------------------------------------------------------------------
# Model inputs
# --------------------------------------------------------------------------------------


def _np_dtype(name: Any, default: str) -> np.dtype:
    text = str(name or default).replace("torch.", "").replace("tensor(", "").rstrip(")")
    text = {"float": "float32", "double": "float64", "long": "int64", "int": "int32"}.get(text, text)
    try:
        return np.dtype(text)
    except TypeError:
        return np.dtype(default)


def input_dtypes(metadata: Mapping[str, Any] | None) -> dict[str, np.dtype]:
    """dtype of each input: the artifact metadata's ``inputs`` where given, else the defaults."""
    declared = {}
    for item in (metadata or {}).get("inputs") or []:
        if isinstance(item, Mapping) and "name" in item:
            declared[item["name"]] = item.get("dtype")
    return {name: _np_dtype(declared.get(name), DEFAULT_DTYPES[name]) for name in INPUT_NAMES}


def _featurizer(metadata: Mapping[str, Any]) -> dict[str, Any]:
    feat = dict(metadata.get("featurizer") or {})
    algorithm = feat.get("algorithm", ALGORITHM)
    if algorithm != ALGORITHM:
        raise StandaloneError(f"featurizer {algorithm!r} is not supported (this script builds {ALGORITHM!r})")
    return {
        "cutoff": float(feat.get("cutoff", 4.0)),
        "max_neighbors": int(feat.get("max_neighbors", 16)),
        "tie_tol": float(feat.get("tie_tol", 1e-8)),
        "min_dist": float(feat.get("min_dist", 0.15)),
    }


def edge_lengths(
    lattice: np.ndarray, frac: np.ndarray, src: np.ndarray, dst: np.ndarray, image: np.ndarray
) -> np.ndarray:
    """``[E]`` float32 edge lengths (Å), rounded as recinet rounds them.

    The edge vector ``(frac[dst] + image - frac[src]) @ lattice`` is computed in float64 and cast
    to float32; its norm is then taken in float32 the way PyTorch's CPU ``linalg.norm`` does
    (``x*x``, then two fused multiply-adds), emulated here with exact float64 products, so the
    lengths equal recinet's bit for bit, not just to 1 ulp.
    """
    vec = ((frac[dst] + image - frac[src]) @ lattice).astype(np.float32)
    x, y, z = (vec[:, a] for a in range(3))
    acc = x * x
    acc = (y.astype(np.float64) * y + acc).astype(np.float32)
    acc = (z.astype(np.float64) * z + acc).astype(np.float32)
    return np.sqrt(acc)


def featurize(crystal: Sequence[Any], metadata: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The per-crystal arrays of one crystal (graph, edge lengths, k-vectors), local indices.

    Raises:
        StandaloneError: recinet would refuse the crystal (overlapping atoms, degenerate cell,
            element outside Z 1-100, ...).
    """
    feat = _featurizer(metadata)
    rec = dict(metadata.get("reciprocal") or {})
    f32 = np.float32
    lattice, frac, z = _as_crystal(crystal)
    src, dst, image = build_graph(lattice, frac, **feat)
    out = {
        "atomic_numbers": z,
        "src": src,
        "dst": dst,
        "edge_len": edge_lengths(lattice, frac, src, dst, image),
        "frac": frac.astype(f32),
        "k_int": np.zeros((0, 3), dtype=f32),
        "k_norm": np.zeros(0, dtype=f32),
        "k_slot": np.zeros(0, dtype=np.int64),
    }
    if rec.get("enabled", True):
        box = tuple(int(x) for x in rec.get("box", (2, 2, 2)))
        lat32 = lattice.astype(f32).astype(np.float64)  # recinet batches the lattice in float32
        kn, norm, slot = kvectors(lat32, str(rec.get("kset", "sphere")), float(rec.get("gmax", 2.5)), box)
        out.update(k_int=kn.astype(f32), k_norm=norm.astype(f32), k_slot=slot)
    return out


def collate(records: Sequence[Mapping[str, np.ndarray]], metadata: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One batch of :func:`featurize` records: the eleven input arrays, global indices."""
    dtypes = input_dtypes(metadata)
    n_atoms = np.array([len(r["atomic_numbers"]) for r in records], dtype=np.int64)
    n_ks = np.array([len(r["k_norm"]) for r in records], dtype=np.int64)
    atom_start = np.cumsum(n_atoms) - n_atoms
    k_start = np.cumsum(n_ks) - n_ks

    def cat(key: str, shape: tuple[int, ...], dtype: Any, shift: np.ndarray | None = None) -> np.ndarray:
        parts = [r[key] + (0 if shift is None else shift[b]) for b, r in enumerate(records)]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype=dtype)

    # (atom, k) pairs of each crystal, atom-major: every k-vector of atom 0, then of atom 1, ...
    pair_atom = [s + np.repeat(np.arange(n), k) for s, n, k in zip(atom_start, n_atoms, n_ks)]
    pair_k = [s + np.tile(np.arange(k), n) for s, n, k in zip(k_start, n_atoms, n_ks)]
    counts = np.maximum(n_atoms, 1).astype(np.float32)
    out = {
        "atomic_numbers": cat("atomic_numbers", (0,), np.int64),
        "edge_index": np.stack((cat("src", (0,), np.int64, atom_start), cat("dst", (0,), np.int64, atom_start))),
        "edge_len": cat("edge_len", (0,), np.float32),
        "node_graph": np.repeat(np.arange(len(records), dtype=np.int64), n_atoms),
        "inv_natoms": np.float32(1.0) / counts,
        "frac": cat("frac", (0, 3), np.float32),
        "k_int": cat("k_int", (0, 3), np.float32),
        "k_norm": cat("k_norm", (0,), np.float32),
        "k_slot": cat("k_slot", (0,), np.int64),
        "pair_atom": np.concatenate(pair_atom).astype(np.int64) if records else np.zeros(0, np.int64),
        "pair_k": np.concatenate(pair_k).astype(np.int64) if records else np.zeros(0, np.int64),
    }
    return {name: np.ascontiguousarray(out[name].astype(dtypes[name], copy=False)) for name in INPUT_NAMES}


def build_inputs_numpy(crystals: Sequence[Sequence[Any]], metadata: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The eleven input arrays (NumPy, :data:`INPUT_NAMES` order) for a batch of crystals.

    Args:
        crystals: ``(lattice [3,3] Å rows, frac [N,3], atomic_numbers [N])`` each (numbers may
            also be element symbols); coordinates are wrapped into [0, 1) first, as recinet does.
        metadata: the artifact's metadata (``featurizer``, ``reciprocal``, ``inputs``).

    Raises:
        StandaloneError: an unusable crystal (message prefixed with its batch position).
    """
    _featurizer(metadata)  # an unsupported graph rule fails even for an empty batch
    records = []
    for b, crystal in enumerate(crystals):
        try:
            records.append(featurize(crystal, metadata))
        except StandaloneError as exc:
            raise StandaloneError(f"crystal {b}: {exc}") from None
    return collate(records, metadata)


def build_inputs(crystals: Sequence[Sequence[Any]], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The eleven input tensors (``torch.Tensor``, in :data:`INPUT_NAMES` order) for a batch of
    crystals; see :func:`build_inputs_numpy` (which needs no PyTorch)."""
    import torch

    return {name: torch.from_numpy(a) for name, a in build_inputs_numpy(crystals, metadata).items()}


# --------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------


def _check_metadata(meta: Mapping[str, Any], path: str) -> dict[str, Any]:
    if meta.get("format") != FORMAT:
        raise StandaloneError(f"{path}: not a recinet export (metadata format {meta.get('format')!r})")
    version = int(meta.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise StandaloneError(
            f"{path}: metadata format_version {version} is newer than this script ({FORMAT_VERSION}); "
            "use the recinet_standalone.py of the recinet version that exported it"
        )
    return dict(meta)


def read_metadata(path: str) -> dict[str, Any]:
    """The ``recinet.json`` metadata stored in an exported model (.pt, .pt2 or .onnx)."""
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("recinet.json")]
            if not names:
                raise StandaloneError(f"{path}: no recinet.json inside (not exported by `recinet export`?)")
            return _check_metadata(json.loads(zf.read(names[0]).decode("utf-8")), path)
    text = None
    try:
        import onnx

        model = onnx.load(path, load_external_data=False)
        text = next((p.value for p in model.metadata_props if p.key == "recinet"), None)
    except ImportError:
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        text = session.get_modelmeta().custom_metadata_map.get("recinet")
    if text is None:
        raise StandaloneError(f"{path}: no 'recinet' metadata (not exported by `recinet export`?)")
    return _check_metadata(json.loads(text), path)


def load_model(path: str, device: str = "cpu") -> tuple[Callable[[Mapping[str, Any]], np.ndarray], dict[str, Any]]:
    """Load an exported model.

    Returns:
        ``(run, metadata)``: ``run(inputs)`` takes the dict of :func:`build_inputs` (tensors) or
        :func:`build_inputs_numpy` (arrays) and returns the ``[B, T]`` predictions as a NumPy
        array, in the units of ``metadata["targets"]``.
    """
    path = os.fspath(path)
    meta = read_metadata(path)
    kind = meta.get("export_format") or {".pt2": "torch-export", ".onnx": "onnx"}.get(
        os.path.splitext(path)[1].lower(), "torchscript"
    )
    dtypes = input_dtypes(meta)
    if kind == "onnx":
        import onnxruntime as ort

        # One intra-op thread: the CPU ScatterND(reduction="add") kernel that sums messages per
        # atom races between threads and then loses updates (wrong values for some crystals,
        # differing from run to run; microsoft/onnxruntime#18048). Parallelise across processes.
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        wanted = [(i.name, i.type) for i in session.get_inputs()]

        def run_onnx(inputs: Mapping[str, Any]) -> np.ndarray:
            feed = {}
            for name, type_ in wanted:
                value = inputs[name]
                value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
                feed[name] = np.ascontiguousarray(value.astype(_np_dtype(type_, str(dtypes[name])), copy=False))
            return np.asarray(session.run(None, feed)[0])

        return run_onnx, meta

    import torch

    if kind == "torch-export":
        module = torch.export.load(path).module()
    elif kind == "torchscript":
        module = torch.jit.load(path, map_location=device)
    else:
        raise StandaloneError(f"{path}: unknown export format {kind!r}")

    def run_torch(inputs: Mapping[str, Any]) -> np.ndarray:
        args = []
        for name in INPUT_NAMES:
            value = inputs[name]
            if not isinstance(value, torch.Tensor):
                value = torch.from_numpy(np.ascontiguousarray(value))
            args.append(value.to(device))
        with torch.no_grad():
            out = module(*args)
        return out.detach().cpu().numpy()

    return run_torch, meta


def predict(path: str, crystals: Sequence[Sequence[Any]], batch_size: int = 64) -> np.ndarray:
    """``[B, T]`` predictions of the exported model at ``path`` for ``crystals``."""
    run, meta = load_model(path)
    n_targets = len(meta.get("targets") or []) or 1
    parts = [
        run(build_inputs_numpy(crystals[s:s + batch_size], meta)) for s in range(0, len(crystals), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, n_targets), dtype=np.float32)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _column(target: Mapping[str, Any]) -> str:
    return f"{target['name']} ({target['unit']})" if target.get("unit") else str(target["name"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Predict with an exported recinet model (.pt, .pt2, .onnx) from POSCAR files; "
        "prints a CSV (needs only numpy + torch, or onnxruntime for .onnx).",
    )
    parser.add_argument("model", help="exported model file (recinet export)")
    parser.add_argument("structures", nargs="+", help="VASP 5 POSCAR files (species line required)")
    parser.add_argument("--batch-size", type=int, default=64, help="crystals per forward pass (default 64)")
    parser.add_argument("-o", "--output", help="write the CSV here instead of stdout")
    args = parser.parse_args(argv)
    try:
        run, meta = load_model(args.model)
    except (StandaloneError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ids: list[str] = []
    records: list[dict[str, np.ndarray]] = []
    failed = 0
    for path in args.structures:
        try:
            records.append(featurize(read_poscar(path), meta))
        except (StandaloneError, OSError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        ids.append(structure_id(path))
    rows = []
    size = max(1, args.batch_size)
    for s in range(0, len(records), size):
        rows.extend(run(collate(records[s:s + size], meta)).tolist())
    header = ["id", *(_column(t) for t in meta.get("targets") or [])]
    table = [[sid, *(format(float(v), ".9g") for v in row)] for sid, row in zip(ids, rows)]
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh, lineterminator="\n").writerows([header, *table])
    else:
        csv.writer(sys.stdout, lineterminator="\n").writerows([header, *table])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
