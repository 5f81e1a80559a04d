"""``recinet featurize``: structure files -> HDF5 graph store, resumable and crash-safe.

How a run survives being killed at any moment (``kill -9`` included):

* structures are processed in input order by a worker pool; every few hundred structures the
  main process writes a *shard* (a small store of the same schema) as
  ``OUT.h5.partial/shard-NNNNNN.h5.tmp`` and renames it into place, so every shard on disk is
  complete;
* when every input is done, the existing ``OUT.h5`` (when appending) and the shards are
  copied into ``OUT.h5.tmp-TOKEN``, which is renamed over ``OUT.h5``; the run token is recorded
  in the file so that shards left over by a kill between the rename and the clean-up are
  recognised and never merged twice;
* rerunning the same command skips every input already in ``OUT.h5`` or in a shard and ends
  with exactly the content an uninterrupted run gives (same order, same arrays).

The output path therefore only ever holds a complete, valid file (or nothing yet).
"""

from __future__ import annotations

import csv
import glob
import json
import multiprocessing as mp
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from recinet_cli.errors import RecinetError, StoreError, StructureError
from recinet_cli.labels import Labels, read_labels
from recinet_cli.structures.crystal import Crystal, validate_crystal
from recinet_cli.structures.graph import GraphParams, build_graph
from recinet_cli.structures.readers import (
    DisorderMode,
    IdMode,
    InputFile,
    ReadFailure,
    ReadOptions,
    check_unique_ids,
    discover_inputs,
    read_file,
    suffix_duplicate_ids,
)

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class FeaturizeConfig:
    """Everything ``recinet featurize`` needs (validated by the CLI layer)."""

    inputs: tuple[str, ...]
    output: str
    params: GraphParams = GraphParams()
    workers: int = 1
    id_mode: IdMode = "stem"
    suffix_duplicates: bool = False
    disorder: DisorderMode = "fail"
    labels: str | None = None
    overwrite: bool = False
    shard_size: int = 512
    shard_seconds: float = 30.0


@dataclass
class FeaturizeReport:
    """What a run did. Counts are for this run; ``total_*`` describe the finished file."""

    output: str
    failures_csv: str
    files_read: int = 0
    files_skipped: int = 0
    stored: int = 0
    failed: int = 0
    atoms: int = 0
    edges: int = 0
    seconds: float = 0.0
    total_stored: int = 0
    total_failed: int = 0
    failures: list[ReadFailure] = field(default_factory=list)
    unlabelled: int = 0


class Progress(Protocol):
    """Progress sink (the CLI renders it with rich or plain lines)."""

    def start(self, total_files: int, skipped: int) -> None: ...

    def advance(self, files: int, structures: int, failed: int) -> None: ...

    def stop(self) -> None: ...


class _NoProgress:
    def start(self, total_files: int, skipped: int) -> None:
        pass

    def advance(self, files: int, structures: int, failed: int) -> None:
        pass

    def stop(self) -> None:
        pass


# --------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphRecord:
    """A featurized structure as sent from a worker to the writer."""

    id: str
    source: str
    formula: str
    lattice: np.ndarray
    numbers: np.ndarray
    frac: np.ndarray
    edge_index: np.ndarray  # [E, 2] local (source, target)
    edge_image: np.ndarray  # [E, 3]


def featurize_crystal(crystal: Crystal, params: GraphParams) -> GraphRecord:
    """Validate one crystal and build its graph (raises :class:`StructureError`)."""
    validate_crystal(crystal)
    g = build_graph(crystal.lattice, crystal.frac, params)
    return GraphRecord(
        id=crystal.id,
        source=crystal.source,
        formula=crystal.formula,
        lattice=crystal.lattice,
        numbers=crystal.numbers,
        frac=crystal.frac,
        edge_index=np.stack((g.edge_src, g.edge_dst), axis=1),
        edge_image=g.edge_image,
    )


_WORKER: tuple[GraphParams, ReadOptions] | None = None


def _init_worker(params: GraphParams, options: ReadOptions) -> None:
    global _WORKER
    _WORKER = (params, options)
    try:  # keep one thread per worker process; the pool is the parallelism
        import threadpoolctl

        threadpoolctl.threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass


def process_file(f: InputFile) -> tuple[InputFile, list[GraphRecord | ReadFailure]]:
    """Read and featurize every structure of one input file (never raises for bad content)."""
    assert _WORKER is not None, "worker not initialised"
    params, options = _WORKER
    out: list[GraphRecord | ReadFailure] = []
    for item in read_file(f, options):
        if isinstance(item, ReadFailure):
            out.append(item)
            continue
        try:
            out.append(featurize_crystal(item, params))
        except StructureError as exc:
            out.append(ReadFailure(item.source, item.id, str(exc)))
        except Exception as exc:  # a bug on one structure must not lose the others
            out.append(ReadFailure(item.source, item.id, f"{type(exc).__name__}: {exc}"))
    return f, out


def _results(
    files: Sequence[InputFile], workers: int, params: GraphParams, options: ReadOptions
) -> Iterator[tuple[InputFile, list[GraphRecord | ReadFailure]]]:
    """Results in input order, from a process pool (or inline for one worker)."""
    if workers <= 1 or len(files) <= 1:
        _init_worker(params, options)
        for f in files:
            yield process_file(f)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    chunksize = max(1, min(16, len(files) // (workers * 8)))
    with ctx.Pool(workers, initializer=_init_worker, initargs=(params, options)) as pool:
        yield from pool.imap(process_file, files, chunksize=chunksize)


# --------------------------------------------------------------------------------------
# Main process
# --------------------------------------------------------------------------------------


def failures_csv_path(output: str) -> str:
    """``graphs.h5`` -> ``graphs.failed.csv`` (next to the output)."""
    root, ext = os.path.splitext(output)
    return (root if ext in (".h5", ".hdf5") else output) + ".failed.csv"


def _abs_source(f: InputFile) -> str:
    return os.path.abspath(f.display)


def _check_output_writable(output: str) -> None:
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise RecinetError(f"{output}: cannot write output: directory {parent} does not exist")
    if os.path.isdir(output):
        raise RecinetError(f"{output}: cannot write output: it is a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RecinetError(f"{output}: cannot write output: permission denied in {parent}")


@dataclass
class _RunState:
    token: str
    partial_dir: str
    shards: list[str]
    done_inputs: set[str]
    ids: dict[str, str]  # id -> source of everything already stored
    n_shards: int


def _manifest(cfg: FeaturizeConfig, labels: Labels | None, token: str) -> dict[str, object]:
    from recinet_cli.store.schema import featurizer_hash

    return {
        "token": token,
        "featurizer_hash": featurizer_hash(cfg.params.as_dict()),
        "target_names": list(labels.names) if labels else [],
        "disorder": cfg.disorder,
        "id_mode": cfg.id_mode,
        "suffix_duplicates": cfg.suffix_duplicates,
    }


def _read_existing(output: str, cfg: FeaturizeConfig, labels: Labels | None) -> tuple[set[str], dict[str, str], list[str]]:
    """Inputs and ids already in the output file; refuses a file built differently."""
    import h5py

    from recinet_cli.store.schema import SCHEMA, featurizer_hash

    try:
        h5 = h5py.File(output, "r")
    except OSError:
        raise StoreError(
            f"{output}: exists but is not a readable HDF5 file; use --overwrite to replace it"
        ) from None
    with h5:
        if h5.attrs.get("schema") != SCHEMA:
            raise StoreError(f"{output}: exists and is not a recinet graph store; use --overwrite")
        ours = featurizer_hash(cfg.params.as_dict())
        if h5.attrs["featurizer_hash"] != ours:
            theirs = json.loads(h5.attrs["featurizer"])
            raise StoreError(
                f"{output}: was built with different featurizer parameters ({_diff(theirs, cfg.params.as_dict())}); "
                "appending would mix graphs; use --overwrite or another output file"
            )
        names = json.loads(h5.attrs["target_names"])
        want = list(labels.names) if labels else []
        if names != want:
            raise StoreError(
                f"{output}: has targets {names or 'none'} but this run has {want or 'none'}; "
                "use --overwrite or another output file"
            )
        inputs = {_decode(s) for s in h5["inputs/source"][:]}
        ids = dict(zip((_decode(s) for s in h5["structures/id"][:]), (_decode(s) for s in h5["structures/source"][:])))
        merged = json.loads(h5.attrs.get("merged_runs", "[]"))
    return inputs, ids, merged


def _diff(a: dict[str, object], b: dict[str, object]) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: file {a.get(k)!r} vs now {b.get(k)!r}" for k in keys) or "hash differs"


def _decode(x: bytes | str) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else x


def _prepare(cfg: FeaturizeConfig, labels: Labels | None) -> _RunState:
    """Open or resume the partial directory; collect what is already done."""
    import h5py

    output = cfg.output
    partial = output + PARTIAL_SUFFIX
    if cfg.overwrite:
        shutil.rmtree(partial, ignore_errors=True)
        if os.path.exists(output):
            os.remove(output)
    for stale in glob.glob(glob.escape(output) + ".tmp-*"):
        os.remove(stale)  # a merge that was killed before its rename
    done: set[str] = set()
    ids: dict[str, str] = {}
    merged: list[str] = []
    if os.path.exists(output):
        done, ids, merged = _read_existing(output, cfg, labels)
    manifest_path = os.path.join(partial, "manifest.json")
    if os.path.isdir(partial):
        try:
            with open(manifest_path) as fh:
                old = json.load(fh)
        except (OSError, json.JSONDecodeError):
            old = None
        if old is None or old.get("token") in merged:
            shutil.rmtree(partial)  # already merged, or never got a manifest: nothing to keep
        else:
            want = _manifest(cfg, labels, old["token"])
            if old != want:
                raise StoreError(
                    f"{partial}: an interrupted run with different settings ({_diff(old, want)}) is "
                    "pending; rerun it with its settings, or use --overwrite"
                )
    if not os.path.isdir(partial):
        token = uuid.uuid4().hex
        os.makedirs(partial)
        _atomic_write_text(manifest_path, json.dumps(_manifest(cfg, labels, token), indent=1))
    with open(manifest_path) as fh:
        token = json.load(fh)["token"]
    shards = sorted(p for p in os.listdir(partial) if p.startswith("shard-") and p.endswith(".h5"))
    for name in os.listdir(partial):
        if name.endswith(".tmp"):
            os.remove(os.path.join(partial, name))  # a shard that was being written when killed
    for name in shards:
        with h5py.File(os.path.join(partial, name), "r") as h5:
            done.update(_decode(s) for s in h5["inputs/source"][:])
            ids.update(zip((_decode(s) for s in h5["structures/id"][:]), (_decode(s) for s in h5["structures/source"][:])))
    n_next = 1 + max((int(s[6:12]) for s in shards), default=-1)
    return _RunState(token, partial, [os.path.join(partial, s) for s in shards], done, ids, n_next)


def _atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_shard(state: _RunState, batch: object, params: dict[str, object], labels: Labels | None) -> None:
    from recinet_cli.store.writer import append_batch, create_store

    final = os.path.join(state.partial_dir, f"shard-{state.n_shards:06d}.h5")
    tmp = final + ".tmp"
    names = list(labels.names) if labels else []
    units = list(labels.units) if labels else []
    with create_store(tmp, params, names, units, compress=False) as h5:
        append_batch(h5, batch)  # type: ignore[arg-type]
    _fsync_path(tmp)
    os.replace(tmp, final)
    state.shards.append(final)
    state.n_shards += 1


def _merge(cfg: FeaturizeConfig, state: _RunState, labels: Labels | None, extra_failures: list[ReadFailure]) -> None:
    """Existing output + shards -> OUT.h5.tmp-TOKEN -> atomic rename over OUT.h5."""
    import h5py

    from recinet_cli.store.writer import GraphBatch, append_batch, create_store, iter_batches

    params = cfg.params.as_dict()
    names = list(labels.names) if labels else []
    units = list(labels.units) if labels else []
    tmp = f"{cfg.output}.tmp-{state.token}"
    merged_runs: list[str] = []
    seen_failures: set[tuple[str, str]] = set()
    with create_store(tmp, params, names, units) as out:
        sources = ([cfg.output] if os.path.exists(cfg.output) else []) + state.shards
        for src in sources:
            with h5py.File(src, "r") as h5:
                if src == cfg.output:
                    merged_runs = json.loads(h5.attrs.get("merged_runs", "[]"))
                for batch in iter_batches(h5):
                    seen_failures.update(zip(batch.failed_source, batch.failed_reason))
                    append_batch(out, batch)
        tail = GraphBatch(n_targets=len(names))
        for f in extra_failures:
            if (f.source, f.reason) not in seen_failures:
                tail.add_failure(f.source, f.id, f.reason)
        append_batch(out, tail)
        out.attrs["merged_runs"] = json.dumps([*merged_runs, state.token])
    _fsync_path(tmp)
    os.replace(tmp, cfg.output)
    shutil.rmtree(state.partial_dir, ignore_errors=True)


def _new_failures(output: str, failures: list[ReadFailure]) -> bool:
    """Whether some of ``failures`` are not recorded in ``output`` yet."""
    from recinet_cli.store.reader import GraphStore

    with GraphStore(output) as store:
        known = {(source, reason) for source, _id, reason in store.failures()}
    return any((f.source, f.reason) not in known for f in failures)


def _write_failures_csv(output: str, path: str) -> int:
    from recinet_cli.store.reader import GraphStore

    rows = GraphStore(output).failures() if os.path.exists(output) else []
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "id", "reason"])
        w.writerows(rows)
    os.replace(tmp, path)
    return len(rows)


def featurize(cfg: FeaturizeConfig, progress: Progress | None = None) -> FeaturizeReport:
    """Featurize ``cfg.inputs`` into ``cfg.output`` (resuming or appending when it exists).

    Raises:
        RecinetError: the output cannot be written, duplicate ids, a labels file that cannot
            be read, or an existing file / pending run built with other settings.
    """
    from recinet_cli.store.writer import GraphBatch

    t0 = time.perf_counter()
    progress = progress or _NoProgress()
    _check_output_writable(cfg.output)
    labels = read_labels(cfg.labels) if cfg.labels else None
    files, discovery_failures = discover_inputs(cfg.inputs, cfg.id_mode)
    files = suffix_duplicate_ids(files) if cfg.suffix_duplicates else files
    if not cfg.suffix_duplicates:
        check_unique_ids(files)
    try:
        state = _prepare(cfg, labels)
    except PermissionError as exc:
        raise RecinetError(f"{cfg.output}: cannot write output: {exc.strerror}") from None
    report = FeaturizeReport(output=cfg.output, failures_csv=failures_csv_path(cfg.output))
    report.failures.extend(discovery_failures)
    todo = [f for f in files if _abs_source(f) not in state.done_inputs]
    report.files_skipped = len(files) - len(todo)
    params = cfg.params.as_dict()
    n_targets = len(labels.names) if labels else 0

    batch = GraphBatch(n_targets=n_targets)
    last_flush = time.monotonic()
    progress.start(len(todo), report.files_skipped)
    try:
        for f, results in _results(todo, cfg.workers, cfg.params, ReadOptions(cfg.disorder)):
            n_ok = n_bad = 0
            for r in results:
                if isinstance(r, GraphRecord) and r.id in state.ids:
                    r = ReadFailure(r.source, r.id, f"duplicate structure id {r.id!r} (already stored from {state.ids[r.id]})")
                if isinstance(r, ReadFailure):
                    batch.add_failure(r.source, r.id, r.reason)
                    report.failures.append(r)
                    n_bad += 1
                    continue
                targets = labels.lookup(r.id) if labels else None
                report.unlabelled += labels is not None and targets is None
                batch.add_graph(r.id, r.source, r.formula, r.lattice, r.numbers, r.frac, r.edge_index, r.edge_image, targets)
                state.ids[r.id] = r.source
                report.atoms += len(r.numbers)
                report.edges += len(r.edge_index)
                n_ok += 1
            batch.inputs.append(_abs_source(f))
            report.files_read += 1
            report.stored += n_ok
            report.failed += n_bad
            progress.advance(1, n_ok, n_bad)
            if len(batch) >= cfg.shard_size or time.monotonic() - last_flush > cfg.shard_seconds:
                _write_shard(state, batch, params, labels)
                batch = GraphBatch(n_targets=n_targets)
                last_flush = time.monotonic()
        if batch.inputs:
            _write_shard(state, batch, params, labels)
    finally:
        progress.stop()
    report.failed += len(discovery_failures)
    from recinet_cli.store.reader import GraphStore

    if state.shards or not os.path.exists(cfg.output) or _new_failures(cfg.output, discovery_failures):
        _merge(cfg, state, labels, discovery_failures)
    else:  # nothing new: keep the file as it is
        shutil.rmtree(state.partial_dir, ignore_errors=True)

    with GraphStore(cfg.output) as store:
        report.total_stored = len(store)
    report.total_failed = _write_failures_csv(cfg.output, report.failures_csv)
    report.seconds = time.perf_counter() - t0
    return report
