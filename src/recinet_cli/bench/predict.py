"""Benchmark: end-to-end ``recinet predict`` throughput from CIF files, and where the time goes.

All measurements run in one process, one after the other, on the same structures (the first
``n`` of an MP ``*.jsonl.gz``, written as ``MATERIAL_ID.cif`` files before any timing), so
their ratios are taken under the same conditions:

1. **Warm-up ("cold") run.** :func:`~recinet_cli.prediction.predict_inputs` over ``warmup``
   *other* structures of the file (the ones after the first ``n``), with the same options.
   It pays the process-wide one-time costs (lazy imports of this process, the allocator and
   BLAS start-up, the model's first forward). Its figures are reported separately and are
   *excluded* from the timed run.
2. **End to end.** ``predict_inputs([cif_dir], models=[bundle], ...)`` over the ``n`` files:
   discovery, model load, reading and featurization in the worker pool, batching,
   k-vectors and forward passes, rows. The timed run starts its own worker pool (as every
   ``recinet predict`` invocation does), so pool start and each worker's first import of the
   CIF parser are *included* (a real invocation pays them too). ``parse`` and ``featurize``
   are CPU seconds summed over the workers (they overlap the model stage); ``model`` is the
   main process's batching + k-vectors + forward seconds; ``wall`` is the whole call.
3. **Featurize only** (reference). The same files read and featurized with the same number of
   processes through the ``recinet featurize`` worker code
   (:func:`recinet_cli.featurize.worker.iter_results` for 2+ processes; in this process, file
   by file, for 0 or 1), no model: the floor the end-to-end wall time would reach if the
   model stage were free. An untimed pass over the warm-up files comes first.
4. **Model only.** The forward pass alone on pre-collated batches of the same graphs (the
   records of 3.): inputs (collation, k-vectors and pairs, transfer to the device) are
   prepared before the forward timing and timed on their own; one untimed forward first.
   At ``batch_size`` over all structures, and at batch size 1 over the first ``single``
   structures (rounded down to whole batches when ``single >= batch_size``, so the batched
   run's first batches give the batched figure over the very same structures). Timings synchronise CUDA before reading the clock.
5. **FLOP utilisation.** The forward FLOPs of 4. are counted with
   :func:`~recinet_cli.bench.model.count_flops` (matrix products only, as ``recinet bench
   model`` counts them) over *all* batches, in an extra untimed pass; the matmul shapes are
   tallied too. The reference rate is an fp32 ``torch.mm`` of the shape that carries the most
   FLOPs (``(E_batch, 3d) @ (3d, d)``, the local convolution's first MLP layers, with
   ``E_batch`` the median number of rows it was called with), timed before the first batch
   and after every batch (every ``single/16`` batches at batch size 1) so both see the same
   machine load. Utilisation = counted FLOPs / summed forward seconds / median matmul rate;
   also per batch (against the mean rate of the two products bracketing the batch, median
   over batches: robust to a machine load that drifts during the run), and for the
   end-to-end model stage (counted FLOPs / the pipeline's ``model`` seconds / median rate). The counted FLOPs include the zero blocks of the
   reciprocal block's dense per-group products (work BLAS does, see
   :meth:`~recinet_cli.model.reciprocal.ReciprocalUpdate.transform_dense`).

Without a model, an untrained paper-size ReciNet (:class:`~recinet_cli.model.config.ModelConfig`
defaults, ``scalar`` head, target ``formation_energy`` in eV/atom) with seeded random weights is
written as a bundle and passed by path: throughput does not depend on the weights' values.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from recinet_cli.bench.featurize import write_cifs
from recinet_cli.bench.model import UTILISATION_GOAL, MatmulProbe, _sync, _timed, count_flops
from recinet_cli.errors import RecinetError
from recinet_cli.prediction.engine import default_workers

#: The paper's batched GPU inference time, and the issue's goal for it (ms per material).
PAPER_MS_PER_MATERIAL = 8.2
MS_PER_MATERIAL_GOAL = 2.0

#: The untrained model's target (name, unit, aliases), as the jarvis plugin names it.
DEFAULT_TARGET = ("formation_energy", "eV/atom", ["formation_energy_peratom", "ef"])

__all__ = [
    "MS_PER_MATERIAL_GOAL",
    "PAPER_MS_PER_MATERIAL",
    "FeaturizeOnly",
    "ModelOnly",
    "PipelineRun",
    "PredictBenchResult",
    "run_predict_bench",
    "write_untrained_bundle",
]


# --------------------------------------------------------------------------- results


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


@dataclass
class PipelineRun:
    """One :func:`~recinet_cli.prediction.predict_inputs` run over CIF files.

    Seconds: ``wall`` is the whole call; ``parse``/``featurize`` are summed over the worker
    processes (CPU time of the pool, overlapping the model stage); ``model`` is the main
    process's batching + k-vectors + forward passes. ``structures`` were featurized and went
    through the model; ``failed`` rows carry an error (unreadable, unfeaturizable or a
    non-finite prediction); ``predicted`` = ``rows - failed``.
    """

    inputs: int
    rows: int
    failed: int
    structures: int
    atoms: int
    edges: int
    workers: int
    batch_size: int
    device: str
    wall_seconds: float
    parse_seconds: float
    featurize_seconds: float
    model_seconds: float

    @property
    def predicted(self) -> int:
        return self.rows - self.failed

    @property
    def structures_per_second(self) -> float:
        """Predicted structures per wall second."""
        return _ratio(self.predicted, self.wall_seconds)

    @property
    def ms_per_structure(self) -> float:
        """Wall milliseconds per predicted structure."""
        return _ratio(1e3 * self.wall_seconds, self.predicted)

    def per_structure_ms(self, seconds: float) -> float:
        """``seconds`` spread over the featurized structures, in ms."""
        return _ratio(1e3 * seconds, self.structures)

    @property
    def outside_model_seconds(self) -> float:
        """Main-process wall time not in the model stage: model load, pool start, waiting
        for graphs, rows."""
        return self.wall_seconds - self.model_seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "predicted": self.predicted,
            "structures_per_second": self.structures_per_second,
            "ms_per_structure": self.ms_per_structure,
            "parse_ms_per_structure": self.per_structure_ms(self.parse_seconds),
            "featurize_ms_per_structure": self.per_structure_ms(self.featurize_seconds),
            "model_ms_per_structure": self.per_structure_ms(self.model_seconds),
            "outside_model_seconds": self.outside_model_seconds,
            "atoms_per_structure": _ratio(self.atoms, self.structures),
            "edges_per_structure": _ratio(self.edges, self.structures),
        }


@dataclass
class FeaturizeOnly:
    """Reading + featurizing the same files without a model (seconds).

    ``parse_seconds``/``featurize_seconds`` are measured only when it ran in this process
    (``processes`` <= 1), else ``None``. ``parameter_sets``: distinct featurizer parameter
    sets of the models (each set is one pass over the files).
    """

    files: int
    structures: int
    failed: int
    processes: int
    in_process: bool
    parameter_sets: int
    wall_seconds: float
    parse_seconds: float | None = None
    featurize_seconds: float | None = None

    @property
    def structures_per_second(self) -> float:
        return _ratio(self.structures, self.wall_seconds)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["structures_per_second"] = self.structures_per_second
        if self.parse_seconds is not None and self.featurize_seconds is not None:
            d["parse_ms_per_structure"] = _ratio(1e3 * self.parse_seconds, self.files)
            d["featurize_ms_per_structure"] = _ratio(1e3 * self.featurize_seconds, self.structures)
        return d


@dataclass
class ModelOnly:
    """The model stage on pre-collated batches (seconds, FLOPs, FLOP/s).

    ``collate_seconds`` (graphs -> PyG batch), ``prepare_seconds`` (transfer + k-vectors and
    pairs) and ``forward_seconds`` (summed over ``forward_batch_seconds``) are timed
    separately; the forward is what ``ms_per_material`` and the utilisation use. ``flops`` is
    counted over every batch (matrix products only). ``matmul_rates``: every reference
    product (FLOP/s), timed before the first batch and after every (group of) batch(es);
    ``batch_matmul_rates``: per batch, the mean of the two products bracketing it.
    """

    batch_size: int
    structures: int
    batches: int
    models: int
    atoms: int
    edges: int
    kvectors: int
    pairs: int
    collate_seconds: float
    prepare_seconds: float
    forward_seconds: float
    forward_batch_seconds: list[float]
    flops: float
    flops_by_op: dict[str, float]
    batch_flops: list[float]
    matmul_rates: list[float] = field(default_factory=list)
    batch_matmul_rates: list[float] = field(default_factory=list)

    @property
    def ms_per_material(self) -> float:
        """Forward milliseconds per structure (all models)."""
        return _ratio(1e3 * self.forward_seconds, self.structures)

    @property
    def ms_per_material_with_inputs(self) -> float:
        """Collate + prepare + forward milliseconds per structure."""
        return _ratio(1e3 * (self.collate_seconds + self.prepare_seconds + self.forward_seconds), self.structures)

    @property
    def achieved_flops(self) -> float:
        """Counted FLOPs over the summed forward seconds (FLOP/s)."""
        return _ratio(self.flops, self.forward_seconds)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ms_per_material": self.ms_per_material,
            "ms_per_material_with_inputs": self.ms_per_material_with_inputs,
            "structures_per_second": _ratio(self.structures, self.forward_seconds),
            "achieved_flops": self.achieved_flops,
        }


@dataclass
class PredictBenchResult:
    """Everything one ``recinet bench predict`` run measured (see the module docstring).

    Rates in FLOP/s, utilisations as fractions. ``matmul_shape`` is ``(m, k, n)`` of the
    reference product, ``matmul_shares`` the counted FLOP share of each ``(k, n)`` matmul
    shape of the batched forward (largest first).
    """

    data: str
    n: int
    model: str
    untrained: bool
    model_config: dict[str, Any]
    device: str
    threads: int
    workers: int
    batch_size: int
    warmup: PipelineRun
    end_to_end: PipelineRun
    featurize_only: FeaturizeOnly
    batched: ModelOnly
    single: ModelOnly | None
    matmul_shape: tuple[int, int, int]
    matmul_shares: list[dict[str, Any]]
    matmul_rate: float = 0.0
    utilisation: float = 0.0
    utilisation_paired: float = 0.0
    utilisation_model_stage: float = 0.0
    utilisation_single: float | None = None
    batched_ms_same_structures: float | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        rates = self.batched.matmul_rates
        self.matmul_rate = statistics.median(rates) if rates else math.nan
        self.utilisation = _ratio(self.batched.achieved_flops, self.matmul_rate)
        b = self.batched
        paired = [
            _ratio(f / s, r) for f, s, r in zip(b.batch_flops, b.forward_batch_seconds, b.batch_matmul_rates) if s > 0
        ]
        self.utilisation_paired = statistics.median(paired) if paired else math.nan
        # The pipeline predicted the same structures, so the same forward FLOPs (up to the
        # dense reciprocal blocks' zero padding, which depends on how crystals are grouped).
        scale = _ratio(self.end_to_end.structures, self.batched.structures)
        self.utilisation_model_stage = _ratio(
            _ratio(self.batched.flops * scale, self.end_to_end.model_seconds), self.matmul_rate
        )
        if self.single is not None and self.single.structures % self.batch_size == 0:
            whole = self.single.structures // self.batch_size
            self.batched_ms_same_structures = _ratio(
                1e3 * sum(b.forward_batch_seconds[:whole]), self.single.structures
            )
        if self.single is not None:
            own = self.single.matmul_rates
            self.utilisation_single = _ratio(
                self.single.achieved_flops, statistics.median(own) if own else self.matmul_rate
            )

    @property
    def goal_met(self) -> bool:
        """FLOP utilisation of the batched forward >= :data:`UTILISATION_GOAL`."""
        return self.utilisation >= UTILISATION_GOAL

    @property
    def ms_goal_applies(self) -> bool:
        """The paper's ms/material figure is a GPU figure: compared on CUDA only."""
        return self.device.startswith("cuda")

    @property
    def ms_goal_met(self) -> bool | None:
        if not self.ms_goal_applies:
            return None
        return self.batched.ms_per_material <= MS_PER_MATERIAL_GOAL

    @property
    def speedup_vs_paper(self) -> float:
        """Paper ms/material over our batched forward ms/material."""
        return _ratio(PAPER_MS_PER_MATERIAL, self.batched.ms_per_material)

    @property
    def featurize_share_of_wall(self) -> float:
        """Featurize-only wall over end-to-end wall: 1.0 means the pipeline runs at the
        featurization floor (the model stage is fully hidden)."""
        return _ratio(self.featurize_only.wall_seconds, self.end_to_end.wall_seconds)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, with the derived figures and goal checks included."""
        return {
            "data": self.data,
            "n": self.n,
            "model": self.model,
            "untrained": self.untrained,
            "model_config": self.model_config,
            "device": self.device,
            "threads": self.threads,
            "workers": self.workers,
            "batch_size": self.batch_size,
            "warmup": self.warmup.as_dict(),
            "end_to_end": self.end_to_end.as_dict(),
            "featurize_only": self.featurize_only.as_dict(),
            "featurize_share_of_wall": self.featurize_share_of_wall,
            "model_only": {
                "batched": self.batched.as_dict(),
                "single": self.single.as_dict() if self.single is not None else None,
            },
            "flops": {
                "counted_over": "every batch of the model-only runs (matrix products only)",
                "per_structure": _ratio(self.batched.flops, self.batched.structures),
                "matmul_shape": list(self.matmul_shape),
                "matmul_shares": self.matmul_shares,
                "matmul_rate": self.matmul_rate,
                "utilisation": self.utilisation,
                "utilisation_paired": self.utilisation_paired,
                "utilisation_model_stage": self.utilisation_model_stage,
                "utilisation_single": self.utilisation_single,
                "goal": UTILISATION_GOAL,
                "goal_met": self.goal_met,
            },
            "ms_per_material": {
                "batched": self.batched.ms_per_material,
                "batched_with_inputs": self.batched.ms_per_material_with_inputs,
                "single": self.single.ms_per_material if self.single is not None else None,
                "batched_same_structures_as_single": self.batched_ms_same_structures,
                "end_to_end": self.end_to_end.ms_per_structure,
                "paper": PAPER_MS_PER_MATERIAL,
                "speedup_vs_paper": self.speedup_vs_paper,
                "goal": MS_PER_MATERIAL_GOAL,
                "goal_applies": self.ms_goal_applies,
                "goal_met": self.ms_goal_met,
            },
        }


# --------------------------------------------------------------------------- inputs


def write_untrained_bundle(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """An untrained paper-size ReciNet (ModelConfig defaults, ``scalar`` head, target
    ``formation_energy`` in eV/atom, seeded random weights) as a model bundle at ``path``."""
    from recinet_cli.bundle import save_bundle
    from recinet_cli.model.config import ModelConfig
    from recinet_cli.model.recinet import ReciNet
    from recinet_cli.store.schema import featurizer_hash
    from recinet_cli.structures.graph import GraphParams

    name, unit, aliases = DEFAULT_TARGET
    config = ModelConfig(head="scalar", targets=(name,))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ReciNet(config).eval()
    params = GraphParams()
    info = {
        "name": "untrained-paper-size",
        "task": f"bench:{name}",
        "model_config": config.to_dict(),
        "featurizer": params.as_dict(),
        "featurizer_hash": featurizer_hash(params.as_dict()),
        "targets": [{"name": name, "unit": unit, "aliases": aliases}],
        "group": None,
        "scaler": {"mean": net.target_mean.tolist(), "std": net.target_std.tolist()},
        "dataset": {"name": "bench", "version": "untrained", "fold": None, "split": "none",
                    "sizes": {}, "ids_sha256": {}},
        "metrics": {},
        "train_config": {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "note": "untrained, for throughput benchmarks only (recinet bench predict)",
    }
    return save_bundle(path, net, info)


def _split_cifs(jsonl_gz: str, n: int, warmup: int, workdir: str) -> tuple[str, str, int]:
    """Write the first ``n + warmup`` structures as CIFs: the first ``n`` into
    ``workdir/cifs``, the others into ``workdir/warmup`` (returns both dirs and how many
    warm-up files there are)."""
    every = write_cifs(jsonl_gz, n + warmup, os.path.join(workdir, "all"))
    if len(every) < n:
        raise RecinetError(f"{jsonl_gz}: only {len(every)} structures, asked for {n}")
    timed, warm = os.path.join(workdir, "cifs"), os.path.join(workdir, "warmup")
    for d, paths in ((timed, every[:n]), (warm, every[n:])):
        os.makedirs(d, exist_ok=True)
        for p in paths:
            os.replace(p, os.path.join(d, os.path.basename(p)))
    return timed, warm, len(every) - n


# --------------------------------------------------------------------------- 1-2. pipeline


def _pipeline(inputs: str, n_inputs: int, model_path: str, device: str, batch_size: int, workers: int,
              precision: str = "auto") -> PipelineRun:
    from recinet_cli.prediction import predict_inputs

    result = predict_inputs([inputs], [], models=[model_path], device=device, batch_size=batch_size,
                            precision=precision, workers=workers)
    t = result.timings
    return PipelineRun(
        inputs=n_inputs, rows=len(result.rows), failed=result.failed, structures=t.structures,
        atoms=t.atoms, edges=t.edges, workers=workers, batch_size=batch_size, device=result.device,
        wall_seconds=t.total, parse_seconds=t.parse, featurize_seconds=t.featurize, model_seconds=t.model,
    )


# --------------------------------------------------------------------------- 3. featurize only


def _featurize_inline(files: Sequence[Any], params: Sequence[Any]) -> tuple[list[list[Any]], int, float, float]:
    """Read and featurize in this process: (records per parameter set, failures, parse s,
    featurize s). Mirrors the prediction worker, without touching this process's thread
    limits."""
    from recinet_cli.featurize.worker import featurize_crystal
    from recinet_cli.structures.readers import ReadFailure, ReadOptions, read_file

    records: list[list[Any]] = [[] for _ in params]
    failed = 0
    t_parse = t_feat = 0.0
    options = ReadOptions()
    for f in files:
        t0 = time.perf_counter()
        crystals = read_file(f, options)
        t1 = time.perf_counter()
        for c in crystals:
            if isinstance(c, ReadFailure):
                failed += 1
                continue
            try:
                built = [featurize_crystal(c, p) for p in params]
            except Exception:  # StructureError or a bug: the pipeline makes it a failed row
                failed += 1
                continue
            for out, rec in zip(records, built):
                out.append(rec)
        t_parse += t1 - t0
        t_feat += time.perf_counter() - t1
    return records, failed, t_parse, t_feat


def _featurize_pool(files: Sequence[Any], params: Sequence[Any], processes: int) -> tuple[list[list[Any]], int]:
    """The ``recinet featurize`` worker pool, once per parameter set: (records, failures of
    the first set)."""
    from recinet_cli.featurize.worker import GraphRecord, iter_results
    from recinet_cli.structures.readers import ReadOptions

    records: list[list[Any]] = []
    failed = 0
    for i, p in enumerate(params):
        got: list[Any] = []
        for _f, outs in iter_results(list(files), processes, p, ReadOptions()):
            for o in outs:
                if isinstance(o, GraphRecord):
                    got.append(o)
                elif i == 0:
                    failed += 1
        records.append(got)
    return records, failed


def featurize_only(directory: str, warm_directory: str, params: Sequence[Any], processes: int) -> tuple[FeaturizeOnly, list[list[Any]]]:
    """Time reading + featurizing every file of ``directory`` with ``processes`` processes
    (in this process for 0 or 1), after an untimed pass over ``warm_directory``. Returns the
    figures and the graph records (one list per parameter set, in file order)."""
    from recinet_cli.structures.readers import discover_inputs

    files, _ = discover_inputs([directory])
    warm, _ = discover_inputs([warm_directory]) if os.path.isdir(warm_directory) else ([], [])
    _featurize_inline(warm, params)  # imports the parser here (inherited by forked workers)
    in_process = processes <= 1
    t0 = time.perf_counter()
    if in_process:
        records, failed, t_parse, t_feat = _featurize_inline(files, params)
    else:
        records, failed = _featurize_pool(files, params, processes)
        t_parse = t_feat = None
    wall = time.perf_counter() - t0
    res = FeaturizeOnly(
        files=len(files), structures=len(records[0]) if records else 0, failed=failed,
        processes=max(1, processes), in_process=in_process, parameter_sets=len(params),
        wall_seconds=wall, parse_seconds=t_parse, featurize_seconds=t_feat,
    )
    return res, records


# --------------------------------------------------------------------------- 4-5. model only


class _MatmulShapes(TorchDispatchMode):
    """Tallies the FLOPs of ``aten.mm``/``aten.addmm`` by ``(k, n)`` and the rows ``m`` seen."""

    def __init__(self) -> None:
        super().__init__()
        self.flops: dict[tuple[int, int], float] = defaultdict(float)
        self.rows: dict[tuple[int, int], list[int]] = defaultdict(list)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name in ("mm", "addmm"):
            a, b = (args[0], args[1]) if name == "mm" else (args[1], args[2])
            m, k = a.shape
            n = b.shape[1]
            self.flops[(int(k), int(n))] += 2.0 * m * k * n
            self.rows[(int(k), int(n))].append(int(m))
        return func(*args, **(kwargs or {}))


@dataclass
class _Prepared:
    """One batch's model inputs per model (on the device) and its sizes."""

    inputs: list[dict[str, torch.Tensor]]
    structures: int
    atoms: int
    edges: int
    kvectors: int
    pairs: int


def _prepare(models: Sequence[tuple[Any, int]], records: Sequence[Sequence[Any]], batch_size: int,
             device: torch.device, limit: int | None = None) -> tuple[list[_Prepared], float, float]:
    """Collate and prepare every batch (not the forward): (batches, collate s, prepare s)."""
    from recinet_cli.inference import collate, model_inputs

    total = len(records[0]) if limit is None else min(limit, len(records[0]))
    batches: list[_Prepared] = []
    t_collate = t_prepare = 0.0
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        per_group: dict[int, Any] = {}
        inputs = []
        for model, group in models:
            if group not in per_group:
                t0 = time.perf_counter()
                per_group[group] = collate(records[group][start:stop])
                t_collate += time.perf_counter() - t0
            seconds, x = _timed(lambda m=model, b=per_group[group]: model_inputs(m, b, device, merge_edges=True), device)
            t_prepare += seconds
            inputs.append(x)
        x0 = inputs[0]
        batches.append(_Prepared(
            inputs=inputs, structures=stop - start, atoms=int(x0["atomic_numbers"].shape[0]),
            edges=int(x0["edge_weight"].sum()) if "edge_weight" in x0 else int(x0["edge_index"].shape[1]),
            kvectors=int(x0["k_int"].shape[0]),
            pairs=int(x0["pair_k"].shape[0]),
        ))
    return batches, t_collate, t_prepare


def _count(models: Sequence[tuple[Any, int]], batches: Sequence[_Prepared]) -> tuple[float, dict[str, float], list[float], _MatmulShapes]:
    """Forward FLOPs of every batch (one untimed pass): total, by op, per batch, by shape."""
    shapes = _MatmulShapes()
    per_batch: list[float] = []
    by_op: dict[str, float] = defaultdict(float)
    with torch.inference_mode(), shapes:
        for b in batches:
            def run(b: _Prepared = b) -> None:
                for (model, _), x in zip(models, b.inputs):
                    model(**x)

            flops, ops = count_flops(run)
            per_batch.append(flops)
            for op, f in ops.items():
                by_op[op] += f
    return sum(per_batch), dict(by_op), per_batch, shapes


def model_only(models: Sequence[tuple[Any, int]], records: Sequence[Sequence[Any]], batch_size: int,
               device: torch.device, limit: int | None = None,
               probe_for: Callable[[_MatmulShapes, list[_Prepared]], MatmulProbe] | None = None,
               probe: MatmulProbe | None = None,
               probe_every: int = 1, precision: str = "fp32") -> tuple[ModelOnly, _MatmulShapes, MatmulProbe | None]:
    """Time the forward alone on pre-collated batches (see the module docstring, 4.).

    ``models``: (ReciNet in eval mode on ``device``, featurizer group index) pairs;
    ``records[group]``: the graph records of that group. ``probe_for`` builds the reference
    matmul from the counted shapes (or ``probe`` is used as given); one reference product is
    timed before the first batch and one after every ``probe_every`` timed batches, and each
    batch is paired with the mean rate of the two products bracketing it. ``precision``:
    the forward's arithmetic (``auto``/``fp32``/``bf16``); FLOPs are counted in fp32.
    """
    from recinet_cli.model.precision import autocast

    batches, t_collate, t_prepare = _prepare(models, records, batch_size, device, limit)
    if not batches:
        raise RecinetError("no structure could be featurized; nothing to run the model on")
    flops, by_op, batch_flops, shapes = _count(models, batches)
    if probe is None and probe_for is not None:
        probe = probe_for(shapes, batches)
    every = max(1, probe_every)
    with torch.inference_mode():
        with autocast(precision, device):
            for (model, _), x in zip(models, batches[0].inputs):  # first forward, untimed
                model(**x)
        if probe is not None:
            probe.rates(2)
        _sync(device)
        seconds: list[float] = []
        rates: list[float] = []  # every reference product, in order
        paired: list[float] = []  # per batch: mean of the products bracketing its group
        group_start = 0
        if probe is not None:
            rates.append(probe.rate())
        for i, b in enumerate(batches):
            def run(b: _Prepared = b) -> None:
                with autocast(precision, device):
                    for (model, _), x in zip(models, b.inputs):
                        model(**x)

            s, _ = _timed(run, device)
            seconds.append(s)
            if probe is not None and ((i + 1) % every == 0 or i + 1 == len(batches)):
                rates.append(probe.rate())
                paired += [(rates[-2] + rates[-1]) / 2] * (i + 1 - group_start)
                group_start = i + 1
    res = ModelOnly(
        batch_size=batch_size, structures=sum(b.structures for b in batches), batches=len(batches),
        models=len(models), atoms=sum(b.atoms for b in batches), edges=sum(b.edges for b in batches),
        kvectors=sum(b.kvectors for b in batches), pairs=sum(b.pairs for b in batches),
        collate_seconds=t_collate, prepare_seconds=t_prepare, forward_seconds=sum(seconds),
        forward_batch_seconds=seconds, flops=flops, flops_by_op=by_op, batch_flops=batch_flops,
        matmul_rates=rates, batch_matmul_rates=paired,
    )
    return res, shapes, probe


def _dominant_probe(shapes: _MatmulShapes, device: torch.device, dtype: torch.dtype = torch.float32) -> MatmulProbe:
    """The reference product: the ``(k, n)`` carrying the most FLOPs, with the median rows
    ``m`` it was called with, in the dtype the forward multiplies in."""
    (k, n), _ = max(shapes.flops.items(), key=lambda kv: kv[1])
    m = int(statistics.median(shapes.rows[(k, n)]))
    return MatmulProbe(max(1, m), k, n, device, dtype)


def _shares(shapes: _MatmulShapes, top: int = 5) -> list[dict[str, Any]]:
    total = sum(shapes.flops.values()) or 1.0
    ranked = sorted(shapes.flops.items(), key=lambda kv: kv[1], reverse=True)[:top]
    return [
        {"k": k, "n": n, "median_rows": int(statistics.median(shapes.rows[(k, n)])), "calls": len(shapes.rows[(k, n)]),
         "flops": f, "share": f / total}
        for (k, n), f in ranked
    ]


# --------------------------------------------------------------------------- driver


def run_predict_bench(
    data: str,
    n: int = 1000,
    *,
    model: str | None = None,
    device: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    warmup: int = 16,
    single: int = 200,
    workdir: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    precision: str = "auto",
) -> PredictBenchResult:
    """Run the measurements of the module docstring and return their figures.

    Args:
        data: MP ``*.jsonl.gz`` (one JSON per line with ``material_id`` and ``cif``).
        n: structures timed end to end (the first ``n`` of the file).
        model: ``--model`` value (store name, group or bundle path); ``None``: an untrained
            paper-size model (throughput does not depend on the weights).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: structures per forward pass (pipeline and model-only runs).
        workers: featurization processes (``None``: as ``recinet predict`` decides, see
            :func:`recinet_cli.prediction.engine.default_workers`; 0: in the main process).
        warmup: structures of the untimed ("cold") warm-up run (the ones after the first ``n``).
        single: structures timed at batch size 1 (the first ``single``, rounded down to a
            multiple of ``batch_size`` when at least one batch; 0: skip).
        workdir: where the CIFs (and the untrained bundle) go (default: a temporary directory,
            removed afterwards).
        seed: seeds the untrained model's weights.
        log: progress callback (one line per stage).
        precision: ``auto``/``fp32``/``bf16`` for the pipeline and the model-only runs (the
            reference matmul is timed in the same dtype).
    """
    from recinet_cli.bundle import load_bundle
    from recinet_cli.inference import bundle_params
    from recinet_cli.model.precision import resolve_precision
    from recinet_cli.prediction import plan_columns
    from recinet_cli.prediction.engine import pick_device

    say = log or (lambda _msg: None)
    if n < 1 or batch_size < 1 or warmup < 0 or single < 0:
        raise RecinetError("--n and --batch-size must be >= 1 (warm-up and single >= 0)")
    if workers is not None and workers < 0:
        raise RecinetError(f"--workers must be >= 0, got {workers}")
    dev = pick_device(device)  # validates (clear error without CUDA)
    used = resolve_precision(precision, dev)
    dtype = torch.bfloat16 if used == "bf16" else torch.float32
    w = default_workers(n, batch_size) if workers is None else workers
    tmp = None if workdir is not None else tempfile.mkdtemp(prefix="recinet-bench-predict-")
    root = workdir or tmp
    assert root is not None
    try:
        say(f"writing {n} + {warmup} CIF files from {data}")
        cif_dir, warm_dir, n_warm = _split_cifs(data, n, warmup, root)
        untrained = model is None
        model_spec = str(write_untrained_bundle(os.path.join(root, "untrained.safetensors"), seed)) if untrained else model
        assert model_spec is not None
        plan = plan_columns([], [model_spec])

        say(f"warm-up: predict {n_warm} structures on {dev}, {w} workers")
        cold = _pipeline(warm_dir, n_warm, model_spec, str(dev), batch_size, w, used) if n_warm else None
        say(f"end to end: predict {n} structures on {dev}, {w} workers, batch {batch_size}")
        e2e = _pipeline(cif_dir, n, model_spec, str(dev), batch_size, w, used)

        loaded: list[tuple[Any, int]] = []
        params: list[Any] = []
        for ref in plan.models:
            net, info = load_bundle(ref.path, dev)
            p = bundle_params(info, str(ref.path))
            if p not in params:
                params.append(p)
            loaded.append((net, params.index(p)))
        say(f"featurize only: {n} structures, {max(1, w)} process(es)")
        feat, records = featurize_only(cif_dir, warm_dir, params, w)

        say(f"model only: forward at batch {batch_size}, FLOPs counted over every batch")
        batched, shapes, probe = model_only(loaded, records, batch_size, dev, precision=used,
                                            probe_for=lambda s, _b: _dominant_probe(s, dev, dtype))
        assert probe is not None
        one = None
        k = min(single, feat.structures)
        k = k - k % batch_size if k >= batch_size else k
        if k:
            say(f"model only: forward at batch 1 over the first {k} structures")
            one, _, _ = model_only(loaded, records, 1, dev, limit=k, probe=probe, probe_every=max(1, k // 16),
                                   precision=used)
        config = loaded[0][0].config.to_dict()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return PredictBenchResult(
        data=data, n=n, model="untrained paper-size ReciNet" if untrained else model_spec,
        untrained=untrained, model_config=config, device=str(dev), threads=torch.get_num_threads(),
        workers=w, batch_size=batch_size,
        warmup=cold or PipelineRun(0, 0, 0, 0, 0, 0, w, batch_size, str(dev), 0.0, 0.0, 0.0, 0.0),
        end_to_end=e2e, featurize_only=feat, batched=batched, single=one,
        matmul_shape=probe.shape, matmul_shares=_shares(shapes), precision=used,
    )
