"""``recinet featurize``: structure files -> HDF5 graph store, resumable and crash-safe.

The pipeline: discover inputs (:mod:`recinet_cli.structures.readers`), read and build graphs
in worker processes (:mod:`.worker`), checkpoint into shards and merge atomically
(:mod:`.checkpoint`).

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

import time
from dataclasses import dataclass, field
from typing import Protocol

from recinet_cli.errors import RecinetError
from recinet_cli.featurize.checkpoint import (
    abs_source,
    check_output_writable,
    failures_csv_path,
    finish,
    prepare,
    write_failures_csv,
    write_shard,
)
from recinet_cli.featurize.worker import GraphRecord, featurize_crystal, iter_results
from recinet_cli.labels import Labels, read_labels
from recinet_cli.store.reader import GraphStore
from recinet_cli.store.writer import GraphBatch
from recinet_cli.structures.graph import GraphParams
from recinet_cli.structures.readers import (
    DisorderMode,
    IdMode,
    ReadFailure,
    ReadOptions,
    check_unique_ids,
    discover_inputs,
    suffix_duplicate_ids,
)

__all__ = [
    "FeaturizeConfig",
    "FeaturizeReport",
    "GraphRecord",
    "Progress",
    "featurize",
    "featurize_crystal",
]


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


def _add_results(
    batch: GraphBatch,
    results: list[GraphRecord | ReadFailure],
    ids: dict[str, str],
    labels: Labels | None,
    report: FeaturizeReport,
) -> tuple[int, int]:
    """Append one input file's results to the batch; returns (stored, failed).

    ``ids`` maps every id stored so far (file, shards, this run) to its source: a repeated id
    becomes a failure naming the first source.
    """
    n_ok = n_bad = 0
    for r in results:
        if isinstance(r, GraphRecord) and r.id in ids:
            r = ReadFailure(r.source, r.id, f"duplicate structure id {r.id!r} (already stored from {ids[r.id]})")
        if isinstance(r, ReadFailure):
            batch.add_failure(r.source, r.id, r.reason)
            report.failures.append(r)
            n_bad += 1
            continue
        targets = labels.lookup(r.id) if labels else None
        report.unlabelled += labels is not None and targets is None
        split = labels.split_of(r.id) if labels else ""
        batch.add_graph(
            r.id, r.source, r.formula, r.lattice, r.numbers, r.frac, r.edge_index, r.edge_image, targets, split
        )
        ids[r.id] = r.source
        report.atoms += len(r.numbers)
        report.edges += len(r.edge_index)
        n_ok += 1
    return n_ok, n_bad


def featurize(cfg: FeaturizeConfig, progress: Progress | None = None) -> FeaturizeReport:
    """Featurize ``cfg.inputs`` into ``cfg.output`` (resuming or appending when it exists).

    Raises:
        RecinetError: the output cannot be written, duplicate ids, a labels file that cannot
            be read (or has an invalid ``split`` value), or an existing file / pending run
            built with other settings (graph parameters, targets, split column).
    """
    t0 = time.perf_counter()
    progress = progress or _NoProgress()
    check_output_writable(cfg.output)
    labels = read_labels(cfg.labels) if cfg.labels else None
    files, discovery_failures = discover_inputs(cfg.inputs, cfg.id_mode)
    files = suffix_duplicate_ids(files) if cfg.suffix_duplicates else files
    if not cfg.suffix_duplicates:
        check_unique_ids(files)
    try:
        state = prepare(cfg, labels)
    except PermissionError as exc:
        raise RecinetError(f"{cfg.output}: cannot write output: {exc.strerror}") from None
    report = FeaturizeReport(output=cfg.output, failures_csv=failures_csv_path(cfg.output))
    report.failures.extend(discovery_failures)
    todo = [f for f in files if abs_source(f) not in state.done_inputs]
    report.files_skipped = len(files) - len(todo)
    params = cfg.params.as_dict()
    n_targets = len(labels.names) if labels else 0
    has_split = labels.has_split if labels else False

    batch = GraphBatch(n_targets=n_targets, has_split=has_split)
    last_flush = time.monotonic()
    progress.start(len(todo), report.files_skipped)
    try:
        for f, results in iter_results(todo, cfg.workers, cfg.params, ReadOptions(cfg.disorder)):
            n_ok, n_bad = _add_results(batch, results, state.ids, labels, report)
            batch.inputs.append(abs_source(f))
            report.files_read += 1
            report.stored += n_ok
            report.failed += n_bad
            progress.advance(1, n_ok, n_bad)
            if len(batch) >= cfg.shard_size or time.monotonic() - last_flush > cfg.shard_seconds:
                write_shard(state, batch, params, labels)
                batch = GraphBatch(n_targets=n_targets, has_split=has_split)
                last_flush = time.monotonic()
        if batch.inputs:
            write_shard(state, batch, params, labels)
    finally:
        progress.stop()
    report.failed += len(discovery_failures)
    finish(cfg, state, labels, discovery_failures)
    with GraphStore(cfg.output) as store:
        report.total_stored = len(store)
    report.total_failed = write_failures_csv(cfg.output, report.failures_csv)
    report.seconds = time.perf_counter() - t0
    return report
