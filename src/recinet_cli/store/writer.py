"""Writing the HDF5 graph store: in-memory batches and an appending writer.

The writer only ever appends whole batches to growable, chunked, compressed datasets. Crash
safety is provided one level up (:mod:`recinet_cli.featurize`): batches go to small shard
files that are renamed into place atomically, and the final file is assembled under a
temporary name and renamed, so a killed process never leaves a corrupt file behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from recinet_cli.store.schema import (
    ARRAY_DATASETS,
    CHUNK_ROWS,
    POINTER_DATASETS,
    SCHEMA,
    SCHEMA_VERSION,
    SPLIT_DATASET,
    STRING_DATASETS,
    featurizer_hash,
)

_STR = h5py.string_dtype(encoding="utf-8")
_COMPRESSION: dict[str, Any] = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


@dataclass
class GraphBatch:
    """Concatenated graphs and failures, ready to append.

    Shapes: S structures, A atoms, E edges, T targets.
    ``lattice [S,3,3]``, ``n_atoms [S]``, ``n_edges [S]``, ``numbers [A]``, ``frac [A,3]``,
    ``edge_index [E,2]`` (local), ``edge_image [E,3]``, ``targets [S,T]``.
    With ``has_split``, ``splits [S]`` holds each structure's split (``""`` = none) and is
    written to ``structures/split``.
    """

    n_targets: int = 0
    has_split: bool = False
    ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    formulas: list[str] = field(default_factory=list)
    lattice: list[np.ndarray] = field(default_factory=list)
    n_atoms: list[int] = field(default_factory=list)
    n_edges: list[int] = field(default_factory=list)
    numbers: list[np.ndarray] = field(default_factory=list)
    frac: list[np.ndarray] = field(default_factory=list)
    edge_index: list[np.ndarray] = field(default_factory=list)
    edge_image: list[np.ndarray] = field(default_factory=list)
    targets: list[np.ndarray] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    failed_source: list[str] = field(default_factory=list)
    failed_id: list[str] = field(default_factory=list)
    failed_reason: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_total_atoms(self) -> int:
        return int(sum(self.n_atoms))

    @property
    def n_total_edges(self) -> int:
        return int(sum(self.n_edges))

    def add_graph(
        self,
        id: str,
        source: str,
        formula: str,
        lattice: np.ndarray,
        numbers: np.ndarray,
        frac: np.ndarray,
        edge_index: np.ndarray,
        edge_image: np.ndarray,
        targets: np.ndarray | None = None,
        split: str = "",
    ) -> None:
        """Append one structure. ``edge_index [E,2]`` holds local atom indices.

        ``split`` is kept only when the batch ``has_split``.
        """
        if split and not self.has_split:
            raise ValueError(f"structure {id!r} has split {split!r} but the batch has no split column")
        self.ids.append(id)
        self.sources.append(source)
        self.formulas.append(formula)
        self.lattice.append(np.asarray(lattice, dtype=np.float64).reshape(1, 3, 3))
        self.n_atoms.append(len(numbers))
        self.n_edges.append(len(edge_index))
        self.numbers.append(np.asarray(numbers, dtype=np.uint8))
        self.frac.append(np.asarray(frac, dtype=np.float64))
        self.edge_index.append(np.asarray(edge_index, dtype=np.int32).reshape(-1, 2))
        self.edge_image.append(np.asarray(edge_image, dtype=np.int16).reshape(-1, 3))
        t = np.full(self.n_targets, np.nan) if targets is None else np.asarray(targets, np.float64)
        self.targets.append(t.reshape(1, self.n_targets))
        if self.has_split:
            self.splits.append(split)

    def add_failure(self, source: str, id: str, reason: str) -> None:
        self.failed_source.append(source)
        self.failed_id.append(id)
        self.failed_reason.append(reason)

    def arrays(self) -> dict[str, np.ndarray]:
        """The concatenated per-row arrays keyed by dataset path (pointers excluded)."""

        def cat(parts: list[np.ndarray], trailing: tuple[int, ...], dtype: Any) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros((0, *trailing), dtype=dtype)

        return {
            "structures/lattice": cat(self.lattice, (3, 3), np.float64),
            "atoms/numbers": cat(self.numbers, (), np.uint8),
            "atoms/frac": cat(self.frac, (3,), np.float64),
            "edges/index": cat(self.edge_index, (2,), np.int32),
            "edges/image": cat(self.edge_image, (3,), np.int16),
            "structures/targets": cat(self.targets, (self.n_targets,), np.float64),
        }

    def strings(self) -> dict[str, list[str]]:
        """The string datasets keyed by path (``structures/split`` only with ``has_split``)."""
        out = {
            "structures/id": self.ids,
            "structures/source": self.sources,
            "structures/formula": self.formulas,
            "failed/source": self.failed_source,
            "failed/id": self.failed_id,
            "failed/reason": self.failed_reason,
            "inputs/source": self.inputs,
        }
        if self.has_split:
            out[SPLIT_DATASET] = self.splits
        return out


def _chunk(path: str, trailing: tuple[int, ...]) -> tuple[int, ...]:
    return (CHUNK_ROWS[path.split("/")[0]], *trailing)


def create_store(
    path: str,
    params: dict[str, Any],
    target_names: Sequence[str] = (),
    target_units: Sequence[str] = (),
    extra_attrs: dict[str, Any] | None = None,
    compress: bool = True,
    with_split: bool = False,
) -> h5py.File:
    """Create an empty store at ``path`` (truncating) and return it open for writing.

    ``with_split=True`` adds the optional ``structures/split`` dataset. ``compress=False`` is for short-lived files (resume shards): they are written once and
    read once, so compressing them would only cost time.
    """
    from recinet_cli import __version__

    comp = _COMPRESSION if compress else {}
    h5 = h5py.File(path, "w")
    h5.attrs["schema"] = SCHEMA
    h5.attrs["schema_version"] = SCHEMA_VERSION
    h5.attrs["recinet_version"] = __version__
    h5.attrs["featurizer"] = json.dumps(params, sort_keys=True)
    h5.attrs["featurizer_hash"] = featurizer_hash(params)
    h5.attrs["target_names"] = json.dumps(list(target_names))
    h5.attrs["target_units"] = json.dumps(list(target_units))
    h5.attrs["merged_runs"] = json.dumps([])
    for key, value in (extra_attrs or {}).items():
        h5.attrs[key] = value
    for name in (*STRING_DATASETS, *((SPLIT_DATASET,) if with_split else ())):
        h5.create_dataset(name, shape=(0,), maxshape=(None,), dtype=_STR, chunks=_chunk(name, ()), **comp)
    for name, (trailing, dtype) in ARRAY_DATASETS.items():
        h5.create_dataset(
            name, shape=(0, *trailing), maxshape=(None, *trailing), dtype=dtype,
            chunks=_chunk(name, trailing), **comp,
        )
    n_t = len(target_names)
    h5.create_dataset(
        "structures/targets", shape=(0, n_t), maxshape=(None, n_t), dtype=np.float64,
        chunks=(CHUNK_ROWS["structures"], max(n_t, 1)) if n_t else None,
        **(comp if n_t else {}),
    )
    for name in POINTER_DATASETS:
        h5.create_dataset(name, data=np.zeros(1, np.int64), maxshape=(None,), chunks=(4096,), **comp)
    return h5


def _extend(ds: h5py.Dataset, values: np.ndarray | list[str]) -> None:
    n = len(values)
    if n == 0:
        return
    start = ds.shape[0]
    ds.resize(start + n, axis=0)
    ds[start:] = values


def append_batch(h5: h5py.File, batch: GraphBatch) -> None:
    """Append a batch's structures, failures and processed inputs to an open store.

    A store with a split column gets ``""`` (no split) for the structures of a batch
    without one; a batch with split values cannot go into a store without the column.
    """
    strings = batch.strings()
    if SPLIT_DATASET in h5:
        if len(strings.setdefault(SPLIT_DATASET, [""] * len(batch))) != len(batch):
            raise ValueError(f"batch has {len(batch)} structures but {len(batch.splits)} split values")
    elif any(strings.pop(SPLIT_DATASET, ())):
        raise ValueError(f"{h5.filename}: has no {SPLIT_DATASET} dataset for the batch's split values")
    for name, values in strings.items():
        _extend(h5[name], values)
    for name, values in batch.arrays().items():
        if name == "structures/targets" and values.shape[1] == 0:
            h5[name].resize(h5[name].shape[0] + len(batch), axis=0)
            continue
        _extend(h5[name], values)
    for name, counts in (("structures/atom_ptr", batch.n_atoms), ("structures/edge_ptr", batch.n_edges)):
        ptr = h5[name]
        last = int(ptr[-1])
        _extend(ptr, last + np.cumsum(np.asarray(counts, dtype=np.int64)))


def iter_batches(h5: h5py.File, rows: int = 1024) -> Iterator[GraphBatch]:
    """Read a store back as batches of at most ``rows`` structures (memory stays bounded).

    Failures and processed inputs come with the first batch.
    """
    n = h5["structures/id"].shape[0]
    atom_ptr = h5["structures/atom_ptr"][:]
    edge_ptr = h5["structures/edge_ptr"][:]
    n_t = h5["structures/targets"].shape[1]
    has_split = SPLIT_DATASET in h5
    for start in range(0, max(n, 1), rows):
        stop = min(start + rows, n)
        b = GraphBatch(n_targets=n_t, has_split=has_split)
        if start == 0:
            b.failed_source = _strs(h5["failed/source"])
            b.failed_id = _strs(h5["failed/id"])
            b.failed_reason = _strs(h5["failed/reason"])
            b.inputs = _strs(h5["inputs/source"])
        if stop > start:
            a0, a1 = int(atom_ptr[start]), int(atom_ptr[stop])
            e0, e1 = int(edge_ptr[start]), int(edge_ptr[stop])
            b.ids = _strs(h5["structures/id"], start, stop)
            b.sources = _strs(h5["structures/source"], start, stop)
            b.formulas = _strs(h5["structures/formula"], start, stop)
            b.lattice = [h5["structures/lattice"][start:stop]]
            b.n_atoms = np.diff(atom_ptr[start : stop + 1]).tolist()
            b.n_edges = np.diff(edge_ptr[start : stop + 1]).tolist()
            b.numbers = [h5["atoms/numbers"][a0:a1]]
            b.frac = [h5["atoms/frac"][a0:a1]]
            b.edge_index = [h5["edges/index"][e0:e1]]
            b.edge_image = [h5["edges/image"][e0:e1]]
            b.targets = [h5["structures/targets"][start:stop]]
            if has_split:
                b.splits = _strs(h5[SPLIT_DATASET], start, stop)
        yield b


def _strs(ds: h5py.Dataset, start: int = 0, stop: int | None = None) -> list[str]:
    return ds.asstr()[start:stop].tolist()
