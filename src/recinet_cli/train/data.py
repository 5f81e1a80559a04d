"""From a dataset plugin to train/val/test graph sets, through a content-keyed graph cache.

The graphs of a task's structures are built once and stored (HDF5, the ``recinet featurize``
schema) at ``cache_dir()/graphs/DATASET-KEY.h5``. ``KEY`` hashes the dataset name and
version, the featurizer parameters and their hash, the store schema version and the content
of every structure (id, lattice, coordinates, species): a changed setting or changed data
can never reuse a stale file. Targets are not cached; they come from the plugin each run.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recinet_cli.contracts import SPLIT_KEYS, DatasetSplit, PropertyInfo
from recinet_cli.errors import RecinetError
from recinet_cli.paths import cache_dir
from recinet_cli.structures.crystal import Crystal
from recinet_cli.structures.graph import GraphParams

__all__ = ["GraphTargetDataset", "PreparedData", "SplitData", "prepare_data"]


@dataclass(frozen=True)
class SplitData:
    """One split of a task.

    Attributes:
        rows: ``[n]`` int64 row positions in the graph store.
        targets: ``[n, T]`` float64 labels in physical units; NaN where the label is missing
            or belongs to another split (per-property official splits).
    """

    rows: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def label_counts(self) -> list[int]:
        """``[T]`` number of present labels per property."""
        return np.isfinite(self.targets).sum(axis=0).astype(int).tolist()


@dataclass(frozen=True)
class PreparedData:
    """Everything the engine needs about a task's data (picklable, sent to DDP workers)."""

    store_path: str
    dataset: str
    dataset_version: str
    properties: tuple[PropertyInfo, ...]
    featurizer: dict[str, Any]
    featurizer_hash: str
    ids: list[str]
    splits: dict[str, SplitData]
    split_kind: str
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.properties)

    @property
    def target_units(self) -> tuple[str, ...]:
        return tuple(p.unit for p in self.properties)

    def split_ids_sha256(self) -> dict[str, str]:
        """SHA-256 of each split's sorted id list (recorded in the bundle)."""
        return {
            name: hashlib.sha256("\n".join(sorted(self.ids[r] for r in s.rows)).encode()).hexdigest()
            for name, s in self.splits.items()
        }


def content_key(ds: DatasetSplit, params: GraphParams) -> str:
    """Hex key of the graph cache entry for these structures and graph parameters."""
    from recinet_cli.store.schema import SCHEMA_VERSION, featurizer_hash

    h = hashlib.sha256()
    head = {"dataset": ds.name, "version": ds.version, "featurizer": params.as_dict(),
            "featurizer_hash": featurizer_hash(params.as_dict()), "schema": SCHEMA_VERSION}
    h.update(json.dumps(head, sort_keys=True).encode())
    for c in ds.structures:
        h.update(c.id.encode() + b"\0")
        h.update(np.ascontiguousarray(c.lattice, np.float64).tobytes())
        h.update(np.ascontiguousarray(c.frac, np.float64).tobytes())
        h.update(np.ascontiguousarray(c.numbers, np.int64).tobytes())
    return h.hexdigest()


def _featurize_one(args: tuple[Crystal, GraphParams]) -> Any:
    from recinet_cli.featurize.worker import featurize_crystal
    from recinet_cli.structures.readers import ReadFailure, one_line

    crystal, params = args
    try:
        return featurize_crystal(crystal, params)
    except Exception as exc:  # StructureError and anything a bad structure triggers
        return ReadFailure(crystal.source, crystal.id, one_line(exc))


def build_graph_store(
    crystals: Sequence[Crystal],
    params: GraphParams,
    path: Path,
    workers: int,
    advance: Callable[[int], None] = lambda n: None,
) -> None:
    """Featurize ``crystals`` into a new store at ``path`` (written as a temporary file and
    renamed, so ``path`` is complete or absent). Failures are recorded in the store."""
    from recinet_cli.featurize.worker import GraphRecord
    from recinet_cli.store.writer import GraphBatch, append_batch, create_store

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    jobs = ((c, params) for c in crystals)
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_featurize_one, jobs, chunksize=64) if pool else map(_featurize_one, jobs)
        with create_store(str(tmp), params.as_dict()) as h5:
            batch = GraphBatch()
            for r in results:
                if isinstance(r, GraphRecord):
                    batch.add_graph(r.id, r.source, r.formula, r.lattice, r.numbers, r.frac, r.edge_index, r.edge_image)
                else:
                    batch.add_failure(r.source, r.id, r.reason)
                advance(1)
                if len(batch) + len(batch.failed_id) >= 1024:
                    append_batch(h5, batch)
                    batch = GraphBatch()
            append_batch(h5, batch)
        os.replace(tmp, path)
    finally:
        if pool is not None:
            pool.terminate()
        tmp.unlink(missing_ok=True)


def _random_split(n: int, seed: int, val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """Seeded permutation of ``n`` positions into train/val/test (val and test at least 1)."""
    order = np.random.RandomState(seed).permutation(n)
    n_val = max(1, round(n * val_fraction))
    n_test = round(n * test_fraction) if test_fraction > 0 else 0
    n_test = max(1, n_test) if test_fraction > 0 else 0
    return {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}


def assign_splits(
    ds: DatasetSplit, stored: dict[str, int], seed: int, val_fraction: float, test_fraction: float
) -> tuple[dict[str, SplitData], str]:
    """Per-split rows and masked targets. ``stored`` maps id -> store row (featurized ones).

    A property with an official split (``ds.split_of(prop)`` non-empty) uses it; properties
    without one share a seeded random split of the stored structures.
    """
    ids = [c.id for c in ds.structures]
    y = np.asarray(ds.targets, dtype=np.float64)
    n, t = y.shape
    member = {s: np.zeros((n, t), dtype=bool) for s in SPLIT_KEYS}
    kinds = set()
    random_split: dict[str, np.ndarray] | None = None
    for j, prop in enumerate(ds.property_names):
        official = ds.split_of(prop)
        if official:
            kinds.add("official")
            for s in SPLIT_KEYS:
                wanted = set(official.get(s, ()))
                member[s][:, j] = [i in wanted for i in ids]
        else:
            kinds.add(f"random (seed {seed}, val {val_fraction:g}, test {test_fraction:g})")
            if random_split is None:
                random_split = _random_split(n, seed, val_fraction, test_fraction)
            for s in SPLIT_KEYS:
                member[s][random_split[s], j] = True
    present = np.isfinite(y) & np.array([i in stored for i in ids])[:, None]
    splits = {}
    for s in SPLIT_KEYS:
        mask = member[s] & present
        keep = np.flatnonzero(mask.any(axis=1))
        splits[s] = SplitData(
            rows=np.array([stored[ids[i]] for i in keep], dtype=np.int64),
            targets=np.where(mask[keep], y[keep], np.nan),
        )
    return splits, " + ".join(sorted(kinds))


def prepare_data(
    task: Any,
    data: str | None,
    fold: int | None,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    params: GraphParams | None = None,
    workers: int | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> PreparedData:
    """Load the task's dataset, build (or reuse) its graph cache and assign the splits.

    Args:
        task: a :class:`~recinet_cli.train.tasks.Task`.
        data, fold: passed to the dataset plugin's ``load``.
        seed, val_fraction, test_fraction: the random split for datasets without one.
        params: graph parameters (default: the paper's, :class:`GraphParams`).
        workers: featurization processes (default: CPU count).
        log: one-line status messages.
    """
    from recinet_cli.store.reader import GraphStore
    from recinet_cli.store.schema import featurizer_hash

    params = params or GraphParams()
    ds = task.dataset.load(list(task.names), data=Path(data) if data else None, fold=fold)
    if not ds.structures:
        raise RecinetError(f"dataset {ds.name!r} returned no structures with {', '.join(task.names)}")
    key = content_key(ds, params)
    path = cache_dir() / "graphs" / f"{ds.name}-{key[:24]}.h5"
    if path.is_file():
        log(f"graphs: reusing {path}")
    else:
        log(f"graphs: featurizing {len(ds.structures)} structures into {path}")
        build_graph_store(ds.structures, params, path, workers or max(1, min(os.cpu_count() or 1, 8)))
    with GraphStore(path) as store:
        stored = {sid: i for i, sid in enumerate(store.ids)}
        failures = [(sid, reason) for _src, sid, reason in store.failures()]
        ids = list(store.ids)
    splits, kind = assign_splits(ds, stored, seed, val_fraction, test_fraction)
    return PreparedData(
        store_path=str(path), dataset=ds.name, dataset_version=ds.version, properties=ds.properties,
        featurizer=params.as_dict(), featurizer_hash=featurizer_hash(params.as_dict()), ids=ids,
        splits=splits, split_kind=kind, failures=failures,
    )


class GraphTargetDataset(torch.utils.data.Dataset):
    """Graphs of some store rows with their (masked) targets as ``y [1, T]``.

    ``data.row`` carries the store row, so predictions can be traced back to ids.
    """

    def __init__(self, store_path: str, split: SplitData, preload: bool = True) -> None:
        from recinet_cli.store.reader import GraphStore

        self.store = GraphStore(store_path, preload=preload)
        self.rows = split.rows
        self.targets = torch.from_numpy(np.asarray(split.targets, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        from recinet_cli.store.dataset import to_data

        row = int(self.rows[i])
        d = to_data(self.store[row])
        d.y = self.targets[i].reshape(1, -1)
        d.row = torch.tensor([row])
        return d
