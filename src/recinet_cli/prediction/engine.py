"""The prediction pipeline: inputs -> graphs (worker processes) -> batched models -> rows.

Structures are read and featurized in a process pool while the main process runs the models
on the previous batches (``Pool.imap`` keeps working ahead), so parsing, graph building and
inference overlap. Every model is loaded once; graphs are built with each model's own
featurizer parameters (from its bundle), once per distinct parameter set. A structure that
cannot be read, featurized or predicted becomes a row carrying its error; the run goes on.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from recinet_cli.errors import RecinetError, StructureError
from recinet_cli.featurize.worker import GraphRecord, featurize_crystal
from recinet_cli.inference import bundle_params, collate, model_inputs
from recinet_cli.model.precision import resolve_precision
from recinet_cli.prediction.journal import Journal, run_signature
from recinet_cli.prediction.resolve import Column, ModelRef, Plan, PredictError
from recinet_cli.structures.crystal import Crystal
from recinet_cli.structures.graph import GraphParams
from recinet_cli.structures.readers import InputFile, ReadFailure, ReadOptions, one_line, read_file

__all__ = ["default_workers", "Item", "PredictResult", "Progress", "StoredGraph", "Timings", "pick_device", "run_plan"]



@dataclass(frozen=True)
class StoredGraph:
    """Structure ``index`` of a graph file (``recinet featurize`` output)."""

    path: str
    index: int


#: What the pipeline predicts for: a file to read, an in-memory crystal, a stored graph, or an
#: input already known to have failed (kept in place so rows stay in input order).
Item = InputFile | Crystal | StoredGraph | ReadFailure


class Progress(Protocol):
    """Progress sink, as for ``recinet featurize`` (units: input items)."""

    def start(self, total_files: int, skipped: int) -> None: ...

    def advance(self, files: int, structures: int, failed: int) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Timings:
    """Seconds spent: ``parse`` and ``featurize`` are summed over worker processes (CPU time
    of the pool, overlapping the rest); ``model`` is batching + k-vectors + forward passes in
    the main process; ``total`` is the wall clock of the whole run."""

    parse: float = 0.0
    featurize: float = 0.0
    model: float = 0.0
    total: float = 0.0
    structures: int = 0
    atoms: int = 0
    edges: int = 0


@dataclass
class PredictResult:
    """Predictions as plain Python data (no pandas).

    Attributes:
        columns: the predicted properties: name, unit, the model(s) behind each.
        rows: one dict per structure in input order: ``id``, ``formula``, ``source``, one key
            per property (float, NaN when failed), ``PROP_std`` for ensembles, ``error``
            (``None`` when the structure was predicted).
        timings: where the time went.
        device: the torch device the models ran on.
        precision: the arithmetic used (``fp32`` or ``bf16`` autocast).
    """

    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    device: str = "cpu"
    precision: str = "fp32"
    journal: Journal | None = field(default=None, repr=False)

    def finish_journal(self) -> None:
        """Delete the resume journal (call once the output file is written)."""
        if self.journal is not None:
            self.journal.close(remove=True)

    @property
    def failed(self) -> int:
        return sum(r["error"] is not None for r in self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    def array(self, prop: str, std: bool = False) -> np.ndarray:
        """``[S]`` float64 values of one property (NaN for failed rows); ``std=True``: the
        ensemble standard deviation."""
        names = {c.name for c in self.columns}
        if prop not in names:
            raise KeyError(f"{prop!r} is not a predicted property ({', '.join(sorted(names))})")
        key = f"{prop}_std" if std else prop
        return np.array([r.get(key, math.nan) for r in self.rows], dtype=np.float64)

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.rows]


# --------------------------------------------------------------------------- worker side

_WORKER: tuple[tuple[GraphParams, ...], ReadOptions] | None = None
_STORES: dict[str, Any] = {}


def _stored(item: StoredGraph) -> GraphRecord:
    from recinet_cli.store.reader import GraphStore

    store = _STORES.get(item.path)
    if store is None:
        store = _STORES[item.path] = GraphStore(item.path)
        store.formulas = store.strings("formula")
        store.sources = store.strings("source")
    g = store[item.index]
    return GraphRecord(g.id, store.sources[item.index], store.formulas[item.index], g.lattice, g.numbers,
                       g.frac, g.edge_index, g.edge_image)


def _init_worker(params: tuple[GraphParams, ...], options: ReadOptions, threads: bool = True) -> None:
    global _WORKER
    _WORKER = (params, options)
    import pymatgen.io.cif  # noqa: F401 - import the parsers now, not inside the first file's timed parse
    import pymatgen.io.vasp  # noqa: F401
    if threads:
        try:  # one thread per worker process; the pool is the parallelism
            import threadpoolctl

            threadpoolctl.threadpool_limits(1)
        except ImportError:  # pragma: no cover
            pass


#: One structure's outcome: its graphs (one per featurizer) or a failure.
Outcome = tuple[GraphRecord, ...] | ReadFailure


def _process(item: Item) -> tuple[list[Outcome], float, float]:
    """Read (if a file) and featurize one item: (outcomes, parse seconds, featurize seconds).
    Never raises for bad content."""
    assert _WORKER is not None, "worker not initialised"
    params, options = _WORKER
    t0 = time.perf_counter()
    if isinstance(item, ReadFailure):
        return [item], 0.0, 0.0
    if isinstance(item, StoredGraph):  # built with the models' featurizer (checked up front)
        return [(_stored(item),)], 0.0, 0.0
    crystals = [item] if isinstance(item, Crystal) else read_file(item, options)
    t1 = time.perf_counter()
    out: list[Outcome] = []
    for c in crystals:
        if isinstance(c, ReadFailure):
            out.append(c)
            continue
        try:
            out.append(tuple(featurize_crystal(c, p) for p in params))
        except StructureError as exc:
            out.append(ReadFailure(c.source, c.id, str(exc)))
        except Exception as exc:  # a bug on one structure must not lose the others
            out.append(ReadFailure(c.source, c.id, f"{type(exc).__name__}: {one_line(exc)}"))
    return out, t1 - t0, time.perf_counter() - t1


def _outcomes(items: Sequence[Item], workers: int, params: tuple[GraphParams, ...],
              options: ReadOptions) -> Iterator[tuple[list[Outcome], float, float]]:
    """Outcomes in input order, from a process pool (``workers`` >= 1) or in this process."""
    if workers < 1 or len(items) <= 1:
        _init_worker(params, options, threads=False)
        for item in items:
            yield _process(item)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    chunksize = max(1, min(16, len(items) // (workers * 8)))
    with ctx.Pool(workers, initializer=_init_worker, initargs=(params, options)) as pool:
        results = pool.imap(_process, items, chunksize=chunksize)
        import torch_geometric.data  # noqa: F401 - ~2 s of imports, done while the workers parse
        yield from results


# --------------------------------------------------------------------------- main side


def default_workers(items: int, batch_size: int) -> int:
    """Featurization processes when none are asked for: none for fewer than ``batch_size``
    items (starting a pool costs more), else one per core but one (at least 1)."""
    return 0 if items < batch_size else max(1, (os.cpu_count() or 1) - 1)


def pick_device(device: str) -> Any:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N`` as a torch device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise PredictError(f"--device {device}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PredictError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PredictError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise PredictError(f"--device {device}: only cpu and cuda are supported")
    return dev


@dataclass
class _Loaded:
    ref: ModelRef
    model: Any
    group: int  # index into the featurizer parameter sets


def _load_models(plan: Plan, device: Any) -> tuple[list[_Loaded], tuple[GraphParams, ...]]:
    from recinet_cli.bundle import load_bundle

    params: list[GraphParams] = []
    loaded = []
    for ref in plan.models:
        model, info = load_bundle(ref.path, device)
        p = bundle_params(info, str(ref.path))
        if p not in params:
            params.append(p)
        loaded.append(_Loaded(ref, model, params.index(p)))
    return loaded, tuple(params)


@dataclass
class _Pending:
    """Structures waiting for the next batch: row index and graphs."""

    rows: list[int] = field(default_factory=list)
    graphs: list[tuple[GraphRecord, ...]] = field(default_factory=list)


def _forward(models: list[_Loaded], graphs: list[tuple[GraphRecord, ...]], device: Any,
             precision: str = "fp32") -> dict[int, np.ndarray]:
    """``{id(model ref): [B, T]}`` predictions of every model for one batch (``precision``
    resolved: ``fp32`` or ``bf16`` autocast)."""
    import torch

    from recinet_cli.model.precision import autocast

    out: dict[int, np.ndarray] = {}
    batches: dict[int, Any] = {}
    with torch.inference_mode():
        for m in models:
            if m.group not in batches:
                batches[m.group] = collate([g[m.group] for g in graphs]).to(device)
            inputs = model_inputs(m.model, batches[m.group], merge_edges=True)
            with autocast(precision, device):
                y = m.model(**inputs)
            out[id(m.ref)] = y.float().cpu().numpy().astype(np.float64)
    return out


def _fill(row: dict[str, Any], columns: Sequence[Column], preds: dict[int, np.ndarray], b: int) -> None:
    bad = []
    for col in columns:
        values = np.array([preds[id(m)][b, i] for m, i in col.members])
        row[col.name] = float(values.mean())
        if col.ensemble:
            row[f"{col.name}_std"] = float(values.std())
        if not np.isfinite(values).all():
            bad.append(col.name)
    if bad:
        row["error"] = f"non-finite prediction for {', '.join(bad)}"


def _run_batch(pending: _Pending, rows: list[dict[str, Any]], models: list[_Loaded],
               columns: Sequence[Column], device: Any, precision: str = "fp32") -> None:
    """Predict a batch; if the batch fails, retry one by one so only the culprit fails."""
    try:
        preds = _forward(models, pending.graphs, device, precision)
        for b, r in enumerate(pending.rows):
            _fill(rows[r], columns, preds, b)
        return
    except (RecinetError, RuntimeError, ValueError) as exc:
        if len(pending.rows) == 1:
            rows[pending.rows[0]]["error"] = f"prediction failed: {one_line(exc)}"
            return
    for r, g in zip(pending.rows, pending.graphs):
        _run_batch(_Pending([r], [g]), rows, models, columns, device, precision)


def _empty_row(sid: str, source: str, formula: str, columns: Sequence[Column], error: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"id": sid, "formula": formula, "source": source}
    for col in columns:
        row[col.name] = math.nan
        if col.ensemble:
            row[f"{col.name}_std"] = math.nan
    row["error"] = error
    return row


class _Runner:
    """The main-process side of a run: rows, the pending batch, the journal."""

    def __init__(self, result: PredictResult, models: list[_Loaded], device: Any, batch_size: int,
                 journal: Journal | None, precision: str = "fp32") -> None:
        self.result = result
        self.precision = precision
        self.rows = result.rows
        self.columns = result.columns
        self.models = models
        self.device = device
        self.batch_size = batch_size
        self.journal = journal
        self.pending = _Pending()
        self.seen: dict[str, str] = {}
        self.item_ends: list[int] = []  # row index after each item of this run
        self.item_starts: list[int] = []
        self.journaled = 0  # items of this run written to the journal

    def resume(self, done: list[list[dict[str, Any]]]) -> None:
        for rows in done:
            for r in rows:
                self.rows.append(r)
                if r["id"] and r["error"] is None:
                    self.seen[r["id"]] = r["source"]

    def add(self, outcomes: list[Outcome]) -> tuple[int, int]:
        """Rows for one item's outcomes; returns (structures queued, failures)."""
        timings = self.result.timings
        n_ok = n_bad = 0
        self.item_starts.append(len(self.rows))
        for o in outcomes:
            if isinstance(o, tuple) and o[0].id in self.seen:
                o = ReadFailure(o[0].source, o[0].id, f"duplicate structure id {o[0].id!r} (also in {self.seen[o[0].id]})")
            if isinstance(o, ReadFailure):
                self.rows.append(_empty_row(o.id, o.source, "", self.columns, o.reason))
                n_bad += 1
                continue
            g = o[0]
            self.seen[g.id] = g.source
            self.pending.rows.append(len(self.rows))
            self.pending.graphs.append(o)
            self.rows.append(_empty_row(g.id, g.source, g.formula, self.columns, None))
            timings.structures += 1
            timings.atoms += len(g.numbers)
            timings.edges += len(g.edge_index)
            n_ok += 1
        self.item_ends.append(len(self.rows))
        if len(self.pending.rows) >= self.batch_size:
            self.run_pending()
        return n_ok, n_bad

    def run_pending(self) -> None:
        if self.pending.rows:
            t0 = time.perf_counter()
            _run_batch(self.pending, self.rows, self.models, self.columns, self.device, self.precision)
            self.result.timings.model += time.perf_counter() - t0
            self.pending = _Pending()
        self._journal_finished()

    def _journal_finished(self) -> None:
        """Append every item whose rows are all predicted (items finish in order)."""
        if self.journal is None:
            return
        while self.journaled < len(self.item_ends):
            start, end = self.item_starts[self.journaled], self.item_ends[self.journaled]
            if self.pending.rows and self.pending.rows[0] < end:
                break
            self.journal.append(self.rows[start:end])
            self.journaled += 1
        self.journal.flush()


def run_plan(
    plan: Plan,
    items: Sequence[Item],
    *,
    failures: Iterable[ReadFailure] = (),
    device: str = "auto",
    batch_size: int = 64,
    precision: str = "auto",
    workers: int | None = None,
    options: ReadOptions = ReadOptions(),
    progress: Progress | None = None,
    journal_for: str | os.PathLike[str] | None = None,
) -> PredictResult:
    """Predict the plan's columns for every item.

    Args:
        plan: columns and models (:func:`recinet_cli.prediction.resolve.plan_columns`).
        items: input files, crystals, stored graphs or known failures, in output order.
        failures: inputs that could not even be listed (missing files...): rows first.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: structures per forward pass.
        precision: ``auto`` (bf16 autocast on hardware with fast bf16, else fp32), ``fp32``
            or ``bf16`` (:mod:`recinet_cli.model.precision`); the one used is ``result.precision``.
        workers: featurization processes (``None``: one per core but one, at least 1, and
            none for fewer than ``batch_size`` items; 0: featurize in this process).
        progress: progress sink (advanced per item).
        journal_for: the output file of a command: finished inputs are journaled next to it
            (:mod:`recinet_cli.prediction.journal`) and a rerun of the same command resumes.
            The caller writes the output, then calls ``result.finish_journal()``.

    Returns:
        A :class:`PredictResult` with one row per structure (and per failed input).
    """
    t_start = time.perf_counter()
    if batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {batch_size}")
    dev = pick_device(device)
    try:
        used = resolve_precision(precision, dev)
    except RecinetError as exc:
        raise PredictError(f"--precision: {exc}") from None
    models, params = _load_models(plan, dev)
    result = PredictResult(columns=list(plan.columns), device=str(dev), precision=used)
    for f in failures:
        result.rows.append(_empty_row(f.id, f.source, "", result.columns, f.reason))
    journal = None
    done: list[list[dict[str, Any]]] = []
    if journal_for is not None:
        signature = run_signature(plan, items, {"batch_size": batch_size, "disorder": options.disorder,
                                                   "precision": used})
        journal = Journal(journal_for, signature)
        done = journal.load()
        journal.start(done)
        result.journal = journal
    runner = _Runner(result, models, dev, batch_size, journal, used)
    runner.resume(done)
    todo = items[len(done):]
    if workers is None:
        workers = default_workers(len(todo), batch_size)
    if progress:
        progress.start(len(todo), len(done))
    try:
        for outcomes, t_parse, t_feat in _outcomes(todo, workers, params, options):
            result.timings.parse += t_parse
            result.timings.featurize += t_feat
            n_ok, n_bad = runner.add(outcomes)
            if progress:
                progress.advance(1, n_ok, n_bad)
        runner.run_pending()
    finally:
        if progress:
            progress.stop()
        if journal is not None:
            journal.close()
    result.timings.total = time.perf_counter() - t_start
    return result
