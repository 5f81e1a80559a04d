"""Worker side of ``recinet featurize``: read one input file and build its graphs.

Runs in pool processes (or inline with one worker). Never raises for bad content: every
structure comes back either as a :class:`GraphRecord` or as a ``ReadFailure`` with a reason.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from recinet_cli.errors import StructureError
from recinet_cli.store.reader import GraphArrays
from recinet_cli.structures.crystal import Crystal, validate_crystal
from recinet_cli.structures.graph import GraphParams, build_graph
from recinet_cli.structures.readers import InputFile, ReadFailure, ReadOptions, read_file


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

    def arrays(self, targets: np.ndarray | None = None) -> GraphArrays:
        """The same graph as the store hands it out (``targets [T]``, default none)."""
        return GraphArrays(
            id=self.id, lattice=self.lattice, numbers=self.numbers, frac=self.frac,
            edge_index=self.edge_index, edge_image=self.edge_image,
            targets=np.zeros(0) if targets is None else targets,
        )


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


def iter_results(
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
