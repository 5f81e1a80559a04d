"""The one in-memory crystal record every reader produces.

A :class:`Crystal` is deliberately small: a lattice, fractional coordinates and atomic
numbers, plus where it came from. Readers for CIF, POSCAR, extxyz and JSON all convert to
it, validation runs on it, and the graph builder consumes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recinet_cli.errors import StructureError

#: Atoms closer than this (Å, after wrapping, periodic images included) are "overlapping".
#: The reference graph builder (jarvis-tools ``get_all_neighbors(bond_tol=0.15)``) silently
#: drops such pairs; we refuse the structure instead, with the reason.
OVERLAP_DISTANCE = 0.15

#: Elements the CGCNN embedding table covers (Z = 1..100).
MAX_ATOMIC_NUMBER = 100

#: A cell whose volume per atom is below this (Å^3) is treated as degenerate.
MIN_VOLUME = 1e-3


@dataclass(frozen=True, eq=False)
class Crystal:
    """A periodic crystal structure.

    Attributes:
        id: Stable identifier (file stem by default, ``file#index`` for multi-frame files).
        source: Human-readable origin (file path, with ``#index`` for frames).
        lattice: ``[3, 3]`` float64, rows are the lattice vectors a, b, c in Å.
        frac: ``[N, 3]`` float64 fractional coordinates, wrapped into ``[0, 1)``.
        numbers: ``[N]`` int64 atomic numbers.
    """

    id: str
    source: str
    lattice: np.ndarray
    frac: np.ndarray
    numbers: np.ndarray

    @classmethod
    def create(
        cls,
        id: str,
        source: str,
        lattice: np.ndarray,
        frac: np.ndarray,
        numbers: np.ndarray,
        *,
        wrap: bool = True,
    ) -> Crystal:
        """Build a crystal, converting arrays to canonical dtypes and wrapping coordinates."""
        lattice = np.ascontiguousarray(lattice, dtype=np.float64).reshape(3, 3)
        frac = np.ascontiguousarray(frac, dtype=np.float64).reshape(-1, 3)
        numbers = np.ascontiguousarray(numbers, dtype=np.int64).reshape(-1)
        if len(frac) != len(numbers):
            raise StructureError(f"{len(frac)} coordinates but {len(numbers)} species")
        if wrap:
            frac = wrap_fractional(frac)
        return cls(id=id, source=source, lattice=lattice, frac=frac, numbers=numbers)

    @property
    def n_atoms(self) -> int:
        return int(len(self.numbers))

    @property
    def cart(self) -> np.ndarray:
        """``[N, 3]`` Cartesian positions in Å."""
        return self.frac @ self.lattice

    @property
    def volume(self) -> float:
        """Cell volume in Å^3 (absolute value of the lattice determinant)."""
        return float(abs(np.linalg.det(self.lattice)))

    @property
    def formula(self) -> str:
        """Chemical formula of the cell, e.g. ``Na4 Cl4`` (pymatgen ordering)."""
        from pymatgen.core import Composition, Element

        uniq, counts = np.unique(self.numbers, return_counts=True)
        comp = Composition({Element.from_Z(int(z)): int(c) for z, c in zip(uniq, counts, strict=True)})
        return comp.formula


def wrap_fractional(frac: np.ndarray) -> np.ndarray:
    """Wrap fractional coordinates into ``[0, 1)`` exactly (no value equal to 1.0).

    ``x % 1.0`` returns 1.0 for tiny negative inputs; this does not.
    """
    wrapped = frac - np.floor(frac)
    wrapped[wrapped >= 1.0] = 0.0
    return wrapped


def validate_crystal(crystal: Crystal) -> None:
    """Raise :class:`StructureError` with a one-line reason if the crystal is unusable.

    Checks: at least one atom, finite numbers, a non-degenerate lattice, elements inside the
    CGCNN table (Z 1..100). Overlapping atoms are checked by the graph builder, which sees
    every periodic pair anyway.
    """
    if crystal.n_atoms == 0:
        raise StructureError("structure has no atoms")
    if not (np.isfinite(crystal.lattice).all() and np.isfinite(crystal.frac).all()):
        raise StructureError("lattice or coordinates contain NaN or infinite values")
    lengths = np.linalg.norm(crystal.lattice, axis=1)
    if (lengths < 1e-6).any():
        raise StructureError(f"degenerate lattice: vector lengths {np.round(lengths, 4).tolist()} Å")
    volume = crystal.volume
    # Volume relative to the box spanned by the vector lengths catches (nearly) coplanar vectors.
    if volume < MIN_VOLUME or volume / float(np.prod(lengths)) < 1e-6:
        raise StructureError(f"degenerate lattice: cell volume {volume:.3g} Å^3")
    bad = crystal.numbers[(crystal.numbers < 1) | (crystal.numbers > MAX_ATOMIC_NUMBER)]
    if len(bad):
        raise StructureError(
            f"element Z={int(bad[0])} is outside the CGCNN embedding table (Z 1-{MAX_ATOMIC_NUMBER})"
        )
