"""Reading the HDF5 graph store (torch-free).

:class:`GraphStore` opens the file lazily (on first access, once per process) and drops the
handle when pickled, so it can be handed to DataLoader worker processes. With
``preload=True`` every array is read into memory at once (small files, fastest access).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from recinet_cli.errors import StoreError
from recinet_cli.store.schema import SCHEMA, SCHEMA_VERSION, SPLIT_DATASET

_PRELOAD = (
    "structures/lattice",
    "structures/atom_ptr",
    "structures/edge_ptr",
    "structures/targets",
    "atoms/numbers",
    "atoms/frac",
    "edges/index",
    "edges/image",
)


@dataclass(frozen=True)
class GraphArrays:
    """One stored structure as NumPy arrays.

    ``lattice [3,3]`` Å, ``numbers [N]``, ``frac [N,3]``, ``edge_index [E,2]`` (source,
    target), ``edge_image [E,3]``, ``targets [T]`` (NaN = missing).
    """

    id: str
    lattice: np.ndarray
    numbers: np.ndarray
    frac: np.ndarray
    edge_index: np.ndarray
    edge_image: np.ndarray
    targets: np.ndarray

    @property
    def edge_vectors(self) -> np.ndarray:
        """``[E, 3]`` float64 Cartesian edge vectors ``r_t + n·L - r_s`` in Å."""
        s, t = self.edge_index[:, 0], self.edge_index[:, 1]
        return (self.frac[t] + self.edge_image - self.frac[s]) @ self.lattice


class GraphStore:
    """Random access to the structures of a graph store.

    Args:
        path: the ``.h5`` file.
        preload: read every array into memory now (and close the file).
    """

    def __init__(self, path: str | os.PathLike[str], preload: bool = False) -> None:
        self.path = os.fspath(path)
        self._h5: h5py.File | None = None
        self._mem: dict[str, np.ndarray] | None = None
        self._splits: list[str] | None = None
        h5 = self._open()
        try:
            self._check(h5)
            attrs = dict(h5.attrs)
            self.featurizer: dict[str, Any] = json.loads(attrs["featurizer"])
            self.featurizer_hash: str = str(attrs["featurizer_hash"])
            self.target_names: list[str] = json.loads(attrs["target_names"])
            self.target_units: list[str] = json.loads(attrs["target_units"])
            self.recinet_version: str = str(attrs["recinet_version"])
            self.ids: list[str] = h5["structures/id"].asstr()[:].tolist()
            self._atom_ptr = h5["structures/atom_ptr"][:]
            self._edge_ptr = h5["structures/edge_ptr"][:]
            self._has_split = SPLIT_DATASET in h5
            if preload:
                self._mem = {name: h5[name][:] for name in _PRELOAD}
                if self._has_split:
                    self._splits = h5[SPLIT_DATASET].asstr()[:].tolist()
        finally:
            if preload:
                self.close()
        self._index = {sid: i for i, sid in enumerate(self.ids)}

    # -- file handling ---------------------------------------------------------------
    def _open(self) -> h5py.File:
        if self._h5 is None:
            try:
                self._h5 = h5py.File(self.path, "r")
            except FileNotFoundError:
                raise StoreError(f"{self.path}: no such file") from None
            except OSError as exc:
                raise StoreError(f"{self.path}: not a readable HDF5 file ({exc})") from None
        return self._h5

    def _check(self, h5: h5py.File) -> None:
        if h5.attrs.get("schema") != SCHEMA:
            raise StoreError(f"{self.path}: not a recinet graph store")
        version = int(h5.attrs.get("schema_version", -1))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this recinet supports "
                f"({SCHEMA_VERSION}); upgrade recinet"
            )

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"] = None  # each worker opens its own handle
        return state

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- access ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def _slice(self, name: str, start: int, stop: int) -> np.ndarray:
        if self._mem is not None:
            return self._mem[name][start:stop]
        return self._open()[name][start:stop]

    def index_of(self, structure_id: str) -> int:
        try:
            return self._index[structure_id]
        except KeyError:
            raise StoreError(f"{self.path}: no structure with id {structure_id!r}") from None

    def n_atoms(self) -> np.ndarray:
        """``[S]`` atoms per structure."""
        return np.diff(self._atom_ptr)

    def n_edges(self) -> np.ndarray:
        """``[S]`` directed edges per structure."""
        return np.diff(self._edge_ptr)

    def targets(self) -> np.ndarray:
        """``[S, T]`` all targets (NaN = missing)."""
        if self._mem is not None:
            return self._mem["structures/targets"]
        return self._open()["structures/targets"][:]

    def splits(self) -> list[str] | None:
        """``[S]`` each structure's split (``"train"``, ``"val"``, ``"test"``, or ``""`` for
        none), or ``None`` when the file has no split column."""
        if not self._has_split:
            return None
        if self._splits is None:
            self._splits = self._open()[SPLIT_DATASET].asstr()[:].tolist()
        return list(self._splits)

    def __getitem__(self, i: int) -> GraphArrays:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        a0, a1 = int(self._atom_ptr[i]), int(self._atom_ptr[i + 1])
        e0, e1 = int(self._edge_ptr[i]), int(self._edge_ptr[i + 1])
        return GraphArrays(
            id=self.ids[i],
            lattice=self._slice("structures/lattice", i, i + 1)[0],
            numbers=self._slice("atoms/numbers", a0, a1).astype(np.int64),
            frac=self._slice("atoms/frac", a0, a1),
            edge_index=self._slice("edges/index", e0, e1).astype(np.int64),
            edge_image=self._slice("edges/image", e0, e1).astype(np.int64),
            targets=self._slice("structures/targets", i, i + 1)[0],
        )

    def strings(self, name: str) -> list[str]:
        """``[S]`` a per-structure string column: ``"source"`` or ``"formula"`` (or ``"id"``)."""
        if name == "id":
            return list(self.ids)
        h5 = self._open() if self._mem is None else h5py.File(self.path, "r")
        try:
            return h5[f"structures/{name}"].asstr()[:].tolist()
        finally:
            if self._mem is not None:
                h5.close()

    def failures(self) -> list[tuple[str, str, str]]:
        """``(source, id, reason)`` of every input that could not be stored."""
        h5 = self._open() if self._mem is None else h5py.File(self.path, "r")
        try:
            return list(zip(*(h5[f"failed/{name}"].asstr()[:].tolist() for name in ("source", "id", "reason"))))
        finally:
            if self._mem is not None:
                h5.close()
