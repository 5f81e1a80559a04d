"""Benchmark: ReciNet training throughput, FLOP utilisation and the reciprocal block's cost.

Three measurements on real JARVIS structures, all in one process so that their ratios are
taken under the same conditions (same machine load, same thread count):

1. **Throughput and FLOP utilisation.** A batch of real structures (featurized with the
   production featurizer, converted with :func:`~recinet_cli.store.dataset.to_data`) is
   trained on with Adam and an L1 loss against random-but-fixed targets (``model.train()``).
   The FLOPs of one forward+backward are counted with
   :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products only: the usual "model
   FLOPs"; gathers, scatters and element-wise ops count zero). The reference rate is an fp32
   ``torch.mm`` of ``(16384, 3d) @ (3d, d)`` (the shape of the local convolution's first MLP
   layer), timed *interleaved* with the training steps so both see the same machine load.
   Utilisation = (FLOPs per step / median step time) / median matmul rate. Input preparation
   (k-vectors and pairs, :func:`~recinet_cli.model.recinet.prepare_inputs`) is done once,
   before timing: it is the data loader's job, not the step's.
2. **Reciprocal share.** Supercells of a real 5-atom cubic perovskite (tiled ``n1 x n2 x n3``
   to approach each requested size, graphs built by the featurizer) go through the eval-mode
   forward under ``no_grad`` for the ``sphere`` and ``box`` k-sets. The time inside every
   :class:`~recinet_cli.model.reciprocal.ReciprocalUpdate` is summed with forward pre/post
   hooks reading :func:`time.perf_counter` (on CUDA each hook synchronises first, so the time
   is charged to the module that queued the kernels). Hooks were chosen over
   ``torch.profiler``: they add two Python calls per block instead of per-op bookkeeping, so
   the forward being measured is the production one. Share = reciprocal time / whole forward
   time, the median over repeats of that per-forward ratio.
3. **bf16 autocast** (CUDA only): one training step of the same batch and the same initial
   weights in fp32 and under ``torch.autocast(dtype=torch.bfloat16)`` (the reciprocal block
   keeps its phases and sums in fp32 by itself); the relative loss difference should be
   below 1 %. A ``TorchDispatchMode`` records the dtypes of the aten ops run inside the
   reciprocal blocks under autocast, so the fp32 claim is checked, not assumed. The bf16
   step is then timed like the fp32 one, against a bf16 reference matmul. The comparison
   itself (:func:`compare_autocast`) is device-agnostic (the tests run it with CPU autocast).
   The fp32 reference matmul uses PyTorch's float32 matmul precision as configured
   (``"highest"``, i.e. no TF32, by default).
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from recinet_cli.bench.graphs import jarvis_cells
from recinet_cli.errors import RecinetError, StructureError
from recinet_cli.model.config import ModelConfig
from recinet_cli.model.recinet import ReciNet, prepare_inputs
from recinet_cli.model.reciprocal import ReciprocalUpdate
from recinet_cli.structures.graph import GraphParams

#: Goals of the issue's performance section.
UTILISATION_GOAL = 0.30
SHARE_GOAL = 0.25
SHARE_GOAL_MAX_ATOMS = 500
BF16_LOSS_GOAL = 0.01

#: Rows of the reference matmul (columns are 3d -> d, the local conv's first MLP layer).
MATMUL_ROWS = 16384

#: Rough number of simultaneously live ``[P, d]`` float32 temporaries in the reciprocal
#: block's no-grad forward (h_pair, a product, two gathered filters, their sum).
_DENSE_TEMPORARIES = 8  # theta, cos, sin, mask and their products, [N_g, K_g] float32


# --------------------------------------------------------------------------- results


@dataclass
class ThroughputResult:
    """Training-step figures for one batch (times in seconds, rates in FLOP/s).

    ``matmul_rates`` holds ``len(matmul_rates) // steps`` reference matmuls timed right after
    each step. Derived on construction: the median step time, graphs/s, achieved FLOP/s,
    the median matmul rate, ``utilisation`` (ratio of the two medians) and
    ``utilisation_paired`` (median over steps of each step's rate over the matmuls timed
    right after it, which cancels slow drifts in machine load).
    """

    device: str
    threads: int
    dtype: str
    batch_size: int
    atoms: int
    edges: int
    kvectors: int
    pairs: int
    warmup: int
    steps: int
    step_seconds: list[float]
    flops_per_step: float
    flops_by_op: dict[str, float]
    matmul_shape: tuple[int, int, int]
    matmul_rates: list[float]
    step_median_seconds: float = 0.0
    graphs_per_second: float = 0.0
    achieved_flops: float = 0.0
    matmul_rate: float = 0.0
    utilisation: float = 0.0
    utilisation_paired: float = 0.0
    final_loss: float = float("nan")

    def __post_init__(self) -> None:
        self.step_median_seconds = statistics.median(self.step_seconds)
        self.graphs_per_second = self.batch_size / self.step_median_seconds
        self.achieved_flops = self.flops_per_step / self.step_median_seconds
        self.matmul_rate = statistics.median(self.matmul_rates)
        self.utilisation = self.achieved_flops / self.matmul_rate
        per = max(1, len(self.matmul_rates) // len(self.step_seconds))
        self.utilisation_paired = statistics.median(
            self.flops_per_step / seconds / statistics.median(self.matmul_rates[i * per : (i + 1) * per])
            for i, seconds in enumerate(self.step_seconds)
        )

    @property
    def goal_met(self) -> bool:
        return self.utilisation >= UTILISATION_GOAL


@dataclass
class ShareResult:
    """Reciprocal-block share of the forward pass for one supercell and k-set.

    ``forward_seconds``/``reciprocal_seconds``/``share`` are medians over ``repeats``
    forwards; ``prepare_seconds`` is the k-vector and pair construction (outside the
    forward). ``error`` says why a size was not measured (the figures are then ``None``).
    """

    kset: str
    target_atoms: int
    atoms: int
    supercell: tuple[int, int, int]
    edges: int
    kvectors: int
    pairs: int
    repeats: int = 0
    forward_seconds: float | None = None
    reciprocal_seconds: float | None = None
    share: float | None = None
    prepare_seconds: float | None = None
    error: str | None = None
    forward_samples: list[float] = field(default_factory=list)
    reciprocal_samples: list[float] = field(default_factory=list)

    @property
    def goal_applies(self) -> bool:
        return self.atoms <= SHARE_GOAL_MAX_ATOMS

    @property
    def goal_met(self) -> bool | None:
        if not self.goal_applies or self.share is None:
            return None
        return self.share <= SHARE_GOAL


@dataclass
class AutocastResult:
    """fp32 vs autocast training step on the same batch and weights.

    ``skipped`` holds the reason when the comparison did not run (e.g. ``"skipped: no
    CUDA"``). ``reciprocal_op_dtypes`` are the output dtypes of the aten ops run inside the
    reciprocal blocks under autocast; ``reciprocal_fp32`` says whether the phase and sum ops
    (:data:`FP32_OPS`) all produced float32.
    """

    skipped: str | None = None
    device: str = ""
    dtype: str = "bfloat16"
    loss_fp32: float | None = None
    loss_autocast: float | None = None
    relative_loss_difference: float | None = None
    gradient_cosine: float | None = None
    reciprocal_op_dtypes: dict[str, list[str]] = field(default_factory=dict)
    reciprocal_fp32: bool | None = None
    step_seconds: list[float] = field(default_factory=list)
    graphs_per_second: float | None = None
    matmul_rate: float | None = None
    utilisation: float | None = None

    @property
    def goal_met(self) -> bool | None:
        if self.relative_loss_difference is None:
            return None
        return self.relative_loss_difference < BF16_LOSS_GOAL


@dataclass
class ModelBenchResult:
    """Everything one ``recinet bench model`` run measured."""

    data: str
    config: dict[str, Any]
    batch_ids: list[str]
    base_cell: str
    base_formula: str
    throughput: ThroughputResult
    shares: list[ShareResult]
    autocast: AutocastResult
    profiles: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, with the derived figures and goal checks included."""
        tp = asdict(self.throughput)
        tp["goal"] = UTILISATION_GOAL
        tp["goal_met"] = self.throughput.goal_met
        shares = []
        for s in self.shares:
            d = asdict(s)
            d["goal_applies"] = s.goal_applies
            d["goal_met"] = s.goal_met
            shares.append(d)
        ac = asdict(self.autocast)
        ac["goal"] = BF16_LOSS_GOAL
        ac["goal_met"] = self.autocast.goal_met
        return {
            "data": self.data,
            "config": self.config,
            "batch_ids": self.batch_ids,
            "base_cell": self.base_cell,
            "base_formula": self.base_formula,
            "throughput": tp,
            "reciprocal_share": {"goal": SHARE_GOAL, "goal_max_atoms": SHARE_GOAL_MAX_ATOMS, "sizes": shares},
            "autocast": ac,
            "profiles": self.profiles,
        }


# --------------------------------------------------------------------------- inputs


def _z(elements: Sequence[str]) -> np.ndarray:
    from ase.data import atomic_numbers

    try:
        return np.asarray([atomic_numbers[e] for e in elements], dtype=np.int64)
    except KeyError as exc:
        raise StructureError(f"unknown element {exc.args[0]!r}") from None


def cell_data(jid: str, lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray, params: GraphParams) -> Any:
    """A PyG ``Data`` for one cell, built exactly as ``recinet featurize`` + the store would.

    Raises :class:`~recinet_cli.errors.StructureError` for unusable cells.
    """
    from recinet_cli.featurize.worker import featurize_crystal
    from recinet_cli.store.dataset import to_data
    from recinet_cli.store.reader import GraphArrays
    from recinet_cli.structures.crystal import Crystal

    rec = featurize_crystal(Crystal.create(jid, "jarvis", lattice, frac, numbers), params)
    arrays = GraphArrays(
        id=rec.id,
        lattice=rec.lattice,
        numbers=rec.numbers.astype(np.int64),
        frac=rec.frac,
        edge_index=rec.edge_index.astype(np.int64),
        edge_image=rec.edge_image.astype(np.int64),
        targets=np.full(1, np.nan),
    )
    return to_data(arrays)


def jarvis_batch(path: str, batch_size: int, params: GraphParams = GraphParams()) -> tuple[Any, list[str]]:
    """The first ``batch_size`` usable JARVIS structures of ``path`` as one PyG batch, and their ids."""
    from torch_geometric.data import Batch

    datas, ids = [], []
    for jid, lattice, frac, elements in jarvis_cells(path):
        if len(datas) >= batch_size:
            break
        try:
            datas.append(cell_data(jid, lattice, frac, _z(elements), params))
        except StructureError:
            continue
        ids.append(jid)
    if len(datas) < batch_size:
        raise RecinetError(f"{path}: only {len(datas)} usable structures, need {batch_size}")
    return Batch.from_data_list(datas), ids


def _is_cubic_perovskite(lattice: np.ndarray, elements: Sequence[str]) -> bool:
    """5 atoms, formula ABO3 (A != B), cubic cell (equal lengths, right angles)."""
    if len(elements) != 5 or sorted(elements).count("O") != 3 or len(set(elements)) != 3:
        return False
    lengths = np.linalg.norm(lattice, axis=1)
    gram = lattice @ lattice.T
    off = gram[~np.eye(3, dtype=bool)]
    return bool(np.ptp(lengths) < 1e-3 * lengths.mean() and np.abs(off).max() < 1e-3 * lengths.mean() ** 2)


def base_cell(path: str, jid: str | None = None) -> tuple[str, np.ndarray, np.ndarray, list[str]]:
    """The real cell supercells are made of: ``jid`` if given, else the first cubic ABO3
    perovskite (5 atoms) of the file."""
    for cell in jarvis_cells(path):
        if (jid is not None and cell[0] == jid) or (jid is None and _is_cubic_perovskite(cell[1], cell[3])):
            return cell
    raise RecinetError(f"{path}: no {'structure ' + jid if jid else 'cubic 5-atom ABO3 perovskite'} found")


def supercell_shape(cell_atoms: int, target: int, max_n: int = 16) -> tuple[int, int, int]:
    """The tiling ``(n1, n2, n3)`` (n1 >= n2 >= n3) whose atom count is closest to ``target``,
    preferring near-cubic shapes: score = relative size error + 0.1 * (n1/n3 - 1)."""
    best: tuple[float, tuple[int, int, int]] | None = None
    for n1 in range(1, max_n + 1):
        for n2 in range(1, n1 + 1):
            for n3 in range(1, n2 + 1):
                atoms = cell_atoms * n1 * n2 * n3
                score = abs(atoms - target) / target + 0.1 * (n1 / n3 - 1)
                if best is None or score < best[0]:
                    best = (score, (n1, n2, n3))
    assert best is not None
    return best[1]


def make_supercell(
    lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile a cell ``n1 x n2 x n3``: (lattice rows scaled, fractional coords, numbers)."""
    rep = np.asarray(shape)
    shifts = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    new_frac = ((frac[None, :, :] + shifts[:, None, :]) / rep).reshape(-1, 3)
    return lattice * rep[:, None], new_frac, np.tile(numbers, len(shifts))


def _to(inputs: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in inputs.items()}


# --------------------------------------------------------------------------- timing helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


class MatmulProbe:
    """Times ``a @ b`` of shape ``(m, k) @ (k, n)`` in ``dtype`` on ``device``; rates in FLOP/s."""

    def __init__(self, m: int, k: int, n: int, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        gen = torch.Generator().manual_seed(1)
        self.shape = (m, k, n)
        self.a = torch.randn(m, k, generator=gen).to(device=device, dtype=dtype)
        self.b = torch.randn(k, n, generator=gen).to(device=device, dtype=dtype)
        self.out = torch.empty(m, n, device=device, dtype=dtype)
        self.device = device
        self.flops = 2.0 * m * k * n

    def rate(self) -> float:
        """One timed product (FLOP/s)."""
        seconds, _ = _timed(lambda: torch.mm(self.a, self.b, out=self.out), self.device)
        return self.flops / seconds

    def rates(self, n: int) -> list[float]:
        return [self.rate() for _ in range(n)]


def count_flops(step: Callable[[], Any]) -> tuple[float, dict[str, float]]:
    """Total FLOPs of ``step()`` and the per-op breakdown, from ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    by_op = {str(op): float(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return float(counter.get_total_flops()), by_op


# --------------------------------------------------------------------------- 1. throughput


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error in float32 (whatever dtype the prediction came in)."""
    return (pred.float() - target).abs().mean()


def _fresh_model(config: ModelConfig, device: torch.device, seed: int) -> ReciNet:
    torch.manual_seed(seed)
    return ReciNet(config).to(device)


def measure_throughput(
    model: ReciNet,
    inputs: dict[str, Tensor],
    target: Tensor,
    steps: int,
    warmup: int = 2,
    autocast_dtype: torch.dtype | None = None,
    matmul_per_step: int = 3,
) -> ThroughputResult:
    """Train ``model`` for ``warmup`` + ``steps`` Adam steps and count one step's FLOPs.

    After every timed step ``matmul_per_step`` reference matmuls (in the step's compute
    dtype) are timed, so the utilisation's numerator and denominator see the same load.
    """
    device = target.device
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    use_autocast = autocast_dtype is not None

    def forward_backward() -> Tensor:
        with torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.bfloat16, enabled=use_autocast):
            loss = l1_loss(model(**inputs), target)
        loss.backward()
        return loss

    def step() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = forward_backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    opt.zero_grad(set_to_none=True)
    flops, by_op = count_flops(forward_backward)
    opt.zero_grad(set_to_none=True)

    d = model.config.hidden
    probe = MatmulProbe(MATMUL_ROWS, 3 * d, d, device, autocast_dtype or torch.float32)
    probe.rates(2)  # warm-up of the probe
    step_seconds: list[float] = []
    rates: list[float] = []
    loss = torch.zeros(())
    for _ in range(steps):
        seconds, loss = _timed(step, device)
        step_seconds.append(seconds)
        rates.extend(probe.rates(matmul_per_step))
    return ThroughputResult(
        device=str(device),
        threads=torch.get_num_threads(),
        dtype=str(autocast_dtype or torch.float32).removeprefix("torch."),
        batch_size=int(inputs["inv_natoms"].shape[0]),
        atoms=int(inputs["atomic_numbers"].shape[0]),
        edges=int(inputs["edge_index"].shape[1]),
        kvectors=int(inputs["k_int"].shape[0]),
        pairs=int(inputs["pair_k"].shape[0]),
        warmup=warmup,
        steps=steps,
        step_seconds=step_seconds,
        flops_per_step=flops,
        flops_by_op=by_op,
        matmul_shape=probe.shape,
        matmul_rates=rates,
        final_loss=float(loss.detach()),
    )


# --------------------------------------------------------------------------- 2. reciprocal share


@contextmanager
def module_timer(model: nn.Module, kind: type[nn.Module], device: torch.device) -> Iterator[list[float]]:
    """Sum the wall time spent inside every ``kind`` submodule's forward.

    Yields a one-element list holding the running total in seconds (reset it to 0 between
    forwards). Pre/post forward hooks read :func:`time.perf_counter`; on CUDA they
    synchronise first so queued kernels are charged to the right module.
    """
    total = [0.0]
    starts: dict[int, float] = {}

    def pre(module: nn.Module, args: Any) -> None:
        _sync(device)
        starts[id(module)] = time.perf_counter()

    def post(module: nn.Module, args: Any, output: Any) -> None:
        _sync(device)
        total[0] += time.perf_counter() - starts.pop(id(module))

    handles = []
    for m in model.modules():
        if isinstance(m, kind):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        yield total
    finally:
        for h in handles:
            h.remove()


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a bench/test extra
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    return None


def pair_memory_bytes(pairs: int) -> int:
    """Rough peak of the eager reciprocal block's temporaries for one cell (no grad): its dense
    ``[N, K]`` float32 matrices (``pairs`` = N·K); the ``[N, d]``/``[K, d]`` blocks are small
    next to them."""
    return _DENSE_TEMPORARIES * pairs * 4


def measure_share(
    model: ReciNet,
    data: Any,
    device: torch.device,
    min_repeats: int = 3,
    max_repeats: int = 20,
    budget_seconds: float = 20.0,
    memory_fraction: float = 0.6,
    shape: tuple[int, int, int] = (1, 1, 1),
    target_atoms: int = 0,
) -> ShareResult:
    """Reciprocal share of the eval-mode, no-grad forward for one crystal.

    One untimed warm-up forward, then repeats until ``min_repeats`` are done and either
    ``max_repeats`` or ``budget_seconds`` is reached (a forward slower than the budget is
    timed once). A crystal whose ``[P, d]`` temporaries would need more than
    ``memory_fraction`` of the free memory is not run (reported in ``error``); an
    out-of-memory error during the run is caught and reported the same way.
    """
    from torch_geometric.data import Batch

    config = model.config
    batch = Batch.from_data_list([data])
    t0 = time.perf_counter()
    inputs = prepare_inputs(batch, config)
    prepare_seconds = time.perf_counter() - t0
    res = ShareResult(
        kset=config.kset,
        target_atoms=target_atoms,
        atoms=int(inputs["atomic_numbers"].shape[0]),
        supercell=shape,
        edges=int(inputs["edge_index"].shape[1]),
        kvectors=int(inputs["k_int"].shape[0]),
        pairs=int(inputs["pair_k"].shape[0]),
        prepare_seconds=prepare_seconds,
    )
    need = pair_memory_bytes(res.pairs)
    free = _available_bytes(device)
    if free is not None and need > memory_fraction * free:
        res.error = (
            f"not run: the reciprocal block needs ~{need / 2**30:.1f} GiB of [P, d] temporaries "
            f"(P = {res.pairs:,}), {free / 2**30:.1f} GiB free"
        )
        return res
    model.eval()
    try:
        inputs = _to(inputs, device)
        forward_s: list[float] = []
        recip_s: list[float] = []
        with torch.no_grad(), module_timer(model, ReciprocalUpdate, device) as inside:
            first, _ = _timed(lambda: model(**inputs), device)
            if first > budget_seconds:  # too slow to repeat: the warm-up is the one sample
                forward_s.append(first)
                recip_s.append(inside[0])
            while first <= budget_seconds and (
                len(forward_s) < min_repeats or (len(forward_s) < max_repeats and sum(forward_s) < budget_seconds)
            ):
                inside[0] = 0.0
                seconds, _ = _timed(lambda: model(**inputs), device)
                forward_s.append(seconds)
                recip_s.append(inside[0])
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "memory" not in str(exc).lower():
            raise
        res.error = f"out of memory: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return res
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    res.repeats = len(forward_s)
    res.forward_samples, res.reciprocal_samples = forward_s, recip_s
    res.forward_seconds = statistics.median(forward_s)
    res.reciprocal_seconds = statistics.median(recip_s)
    res.share = statistics.median(r / f for r, f in zip(recip_s, forward_s))
    return res


# --------------------------------------------------------------------------- 3. autocast


def _grad_vector(model: nn.Module) -> Tensor:
    return torch.cat([p.grad.detach().float().reshape(-1) for p in model.parameters() if p.grad is not None])


#: Ops of the reciprocal transform that must stay float32 under autocast (phases, sums).
FP32_OPS = ("cos", "sin", "index_add", "index_add_", "scatter_add", "scatter_add_")


class _OpDtypes(TorchDispatchMode):
    """Records the floating output dtypes of every aten op while :attr:`active` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.active = False
        self.seen: dict[str, set[str]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if self.active:
            for t in tree_leaves(out):
                if isinstance(t, Tensor) and t.is_floating_point():
                    name = func.overloadpacket.__name__
                    self.seen.setdefault(name, set()).add(str(t.dtype).removeprefix("torch."))
        return out


@contextmanager
def reciprocal_op_dtypes(model: nn.Module) -> Iterator[dict[str, set[str]]]:
    """Record ``{aten op: output dtypes}`` of the ops run inside any
    :class:`~recinet_cli.model.reciprocal.ReciprocalUpdate` (as dispatched, i.e. after
    autocast's casts) during the ``with`` body."""
    mode = _OpDtypes()

    def pre(module: nn.Module, args: Any) -> None:
        mode.active = True

    def post(module: nn.Module, args: Any, output: Any) -> None:
        mode.active = False

    handles = []
    for m in model.modules():
        if isinstance(m, ReciprocalUpdate):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with mode:
            yield mode.seen
    finally:
        for h in handles:
            h.remove()


def compare_autocast(
    model: ReciNet, inputs: dict[str, Tensor], target: Tensor, dtype: torch.dtype = torch.bfloat16
) -> AutocastResult:
    """One fp32 and one autocast forward+backward from the same weights on the same batch.

    Both copies start from ``model``'s state (deep copies, train mode, so BatchNorm uses the
    batch statistics in both). The autocast forward also records the dtypes of the ops inside
    the reciprocal blocks, to show the phases and sums stayed float32. Works on any device
    whose autocast supports ``dtype`` (CPU autocast supports bfloat16, which the tests use).
    """
    device = target.device
    losses: list[float] = []
    grads: list[Tensor] = []
    seen: dict[str, set[str]] = {}
    for enabled in (False, True):
        m = copy.deepcopy(model).train()
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled):
            if enabled:
                with reciprocal_op_dtypes(m) as seen:
                    pred = m(**inputs)
            else:
                pred = m(**inputs)
            loss = l1_loss(pred, target)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(_grad_vector(m))
    ref, got = losses
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    critical = [d for op in FP32_OPS for d in seen.get(op, ())]
    return AutocastResult(
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        loss_fp32=ref,
        loss_autocast=got,
        relative_loss_difference=abs(got - ref) / abs(ref) if ref else float("inf"),
        gradient_cosine=float(cos),
        reciprocal_op_dtypes={op: sorted(ds) for op, ds in sorted(seen.items())},
        reciprocal_fp32=bool(critical) and all(d == "float32" for d in critical),
    )


# --------------------------------------------------------------------------- profile


def top_ops(fn: Callable[[], Any], device: torch.device, n: int = 12) -> list[dict[str, Any]]:
    """The ``n`` ops of ``fn()`` with the largest self time (device time on CUDA), via
    ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        _sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)
    total = sum(getattr(e, attr) for e in events) or 1.0
    return [
        {
            "op": e.key,
            "self_ms": getattr(e, attr) / 1e3,
            "share": getattr(e, attr) / total,
            "calls": int(e.count),
        }
        for e in events[:n]
    ]


# --------------------------------------------------------------------------- driver


def _training_figures(
    batch: Any, config: ModelConfig, dev: torch.device, steps: int, warmup: int, seed: int, profile: bool
) -> tuple[ThroughputResult, AutocastResult, dict[str, list[dict[str, Any]]]]:
    """Measurements 1 and 3 (and the training-step profile) on one batch."""
    inputs = _to(prepare_inputs(batch, config), dev)
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(int(inputs["inv_natoms"].shape[0]), len(config.targets), generator=gen).to(dev)
    model = _fresh_model(config, dev, seed)
    initial = copy.deepcopy(model.state_dict())
    throughput = measure_throughput(model, inputs, target, steps, warmup)
    profiles: dict[str, list[dict[str, Any]]] = {}
    if profile:
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def train_step() -> None:
            opt.zero_grad(set_to_none=True)
            l1_loss(model(**inputs), target).backward()
            opt.step()

        profiles["train_step"] = top_ops(train_step, dev)
    if dev.type != "cuda":
        return throughput, AutocastResult(skipped="skipped: no CUDA", device=str(dev)), profiles
    # bf16 autocast vs fp32 from the same initial weights, then bf16 throughput
    model.load_state_dict(initial)
    autocast = compare_autocast(model, inputs, target, torch.bfloat16)
    bf16 = measure_throughput(
        _fresh_model(config, dev, seed), inputs, target, steps, warmup, autocast_dtype=torch.bfloat16
    )
    autocast.step_seconds = bf16.step_seconds
    autocast.graphs_per_second = bf16.graphs_per_second
    autocast.matmul_rate = bf16.matmul_rate
    autocast.utilisation = bf16.utilisation
    return throughput, autocast, profiles


def run_model_bench(
    path: str,
    batch_size: int = 64,
    steps: int = 5,
    warmup: int = 2,
    sizes: Sequence[int] = (5, 50, 200, 500, 1000),
    device: str | torch.device | None = None,
    blocks: int = 4,
    cell: str | None = None,
    profile: bool = False,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> ModelBenchResult:
    """Run the three measurements (see the module docstring) and return their figures.

    Args:
        path: JARVIS dft_3d-style ``json.gz``.
        batch_size: structures in the training batch.
        steps: timed training steps (after ``warmup`` untimed ones).
        sizes: target atom counts of the supercells.
        device: ``cpu`` or ``cuda`` (default: cuda when available).
        blocks: ReciNet blocks (the model is otherwise the default one: hidden 256, sphere).
        cell: JARVIS id of the supercells' base cell (default: the first cubic ABO3 perovskite).
        profile: also record torch.profiler top ops of one training step and of the
            forward at the largest measured size <= 500 atoms of each k-set.
        seed: seeds the weights and the random targets.
        log: progress callback (one line per stage).
    """
    say = log or (lambda _msg: None)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RecinetError("--device cuda: CUDA is not available")
    if steps < 1 or batch_size < 1:
        raise RecinetError("--steps and --batch-size must be >= 1")
    config = ModelConfig(blocks=blocks)
    params = GraphParams()

    say(f"featurizing {batch_size} JARVIS structures")
    batch, ids = jarvis_batch(path, batch_size, params)
    say(f"training {warmup} + {steps} steps on {dev}")
    throughput, autocast, profiles = _training_figures(batch, config, dev, steps, warmup, seed, profile)

    # 2. reciprocal share on supercells of a real cell
    jid, lattice, frac, elements = base_cell(path, cell)
    numbers = _z(elements)
    from recinet_cli.structures.crystal import Crystal

    formula = Crystal.create(jid, "jarvis", lattice, frac, numbers).formula
    shares: list[ShareResult] = []
    for kset in ("sphere", "box"):
        kconfig = ModelConfig(blocks=blocks, kset=kset)
        kmodel = _fresh_model(kconfig, dev, seed)
        biggest: tuple[int, Any] | None = None
        for size in sizes:
            shape = supercell_shape(len(numbers), size)
            lat, fr, nums = make_supercell(lattice, frac, numbers, shape)
            data = cell_data(f"{jid}x{'x'.join(map(str, shape))}", lat, fr, nums, params)
            say(f"{kset}: {len(nums)} atoms ({'x'.join(map(str, shape))} of {jid})")
            res = measure_share(kmodel, data, dev, shape=shape, target_atoms=size)
            shares.append(res)
            if res.error is None and res.atoms <= SHARE_GOAL_MAX_ATOMS and (biggest is None or res.atoms > biggest[0]):
                biggest = (res.atoms, data)
        if profile and biggest is not None:
            from torch_geometric.data import Batch

            pin = _to(prepare_inputs(Batch.from_data_list([biggest[1]]), kconfig), dev)
            with torch.no_grad():
                profiles[f"forward_{kset}_{biggest[0]}_atoms"] = top_ops(partial(kmodel, **pin), dev)
    return ModelBenchResult(
        data=path,
        config=config.to_dict(),
        batch_ids=ids,
        base_cell=jid,
        base_formula=formula,
        throughput=throughput,
        shares=shares,
        autocast=autocast,
        profiles=profiles,
    )


def format_rate(flops: float) -> str:
    """``1.23e11`` -> ``"123.0 GFLOP/s"`` (or TFLOP/s above 1e12)."""
    if not math.isfinite(flops):
        return "n/a"
    return f"{flops / 1e12:.2f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:.1f} GFLOP/s"
