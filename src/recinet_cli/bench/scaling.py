"""Benchmark: ReciNet time and peak memory against atoms per cell (``recinet bench scaling``).

What is measured, for every target size and k-set (``sphere`` and ``box``):

* **Cells.** Supercells ``n1 x n2 x n3`` of one real JARVIS cell, tiled to the atom count
  closest to each target (:func:`~recinet_cli.bench.model.supercell_shape`). The default
  base is a real 1-atom cell (the densest 1-atom cell of the file whose ``sphere`` k-set is
  not empty), so cube targets (1, 8, 27, ..., 1000) are hit exactly and the 1-atom point is
  that real cell itself. Every supercell gets the production kNN graph
  (:func:`~recinet_cli.bench.model.cell_data`) and its k-vectors and (atom, k) pairs
  (:func:`~recinet_cli.model.recinet.prepare_inputs`); both are built before timing.
* **Components**, each timed in its own calls on the same inputs, so a component's time and
  peak memory are its own:

  - ``model``: the whole ReciNet forward (embeddings, all blocks, pooling, head);
  - ``local``: the atom and edge embeddings plus every block's local convolution
    (:class:`~recinet_cli.model.local_conv.PotNetConv`), each conv fed the input it
    received inside the whole model (captured once with forward pre-hooks);
  - ``reciprocal``: every block's :class:`~recinet_cli.model.reciprocal.ReciprocalUpdate`
    on its captured inputs.

  ``model`` minus ``local`` minus ``reciprocal`` is the rest (W_r, the pooling and the head).
* **Modes.** ``forward``: ``model.eval()`` under ``torch.no_grad()``. ``backward``
  (forward+backward): the same eval-mode call with autograd on, then ``.sum().backward()``
  (parameter gradients set to ``None`` before each call, outside the timed region; the
  captured block inputs are leaves that require grad, as they do inside the network).
  Eval mode keeps BatchNorm on its running statistics so the 1-atom cell works; a
  training-mode BatchNorm costs the same order (a mean and a variance per channel).
* **Timing.** One untimed warm-up call per component, then rounds that time the three
  components in turn (interleaved, so a change in machine load hits all three): at least
  ``repeats`` rounds, up to ``10 * repeats`` while they fit in about one second (small
  cells), and fewer when the warm-up says ``repeats`` rounds would exceed
  ``budget_seconds``. Intervals are :func:`time.perf_counter` (CUDA: synchronised before
  and after). The figure shown, plotted and fitted is the fastest call (load from other
  processes only ever adds time); the median and every sample are in the JSON too.
  During the whole-model forwards, :func:`~recinet_cli.bench.model.module_timer` hooks also
  record the in-situ time spent in the local part and in the reciprocal blocks: a check of
  the isolated figures.
* **Peak memory**, one extra call per component and mode after the timed ones. CUDA:
  ``torch.cuda.max_memory_allocated`` minus the allocation before the call (tensor bytes).
  CPU: the process's resident-set high-water mark (``VmHWM``) is reset to the current RSS
  through ``/proc/self/clear_refs`` after ``gc.collect(1)`` and glibc ``malloc_trim(0)``,
  and the figure is ``VmHWM`` after the call minus ``VmRSS`` before it: the RSS increase the
  call caused, allocator retention and BLAS workspaces included (``tracemalloc`` does not
  see torch's allocations). Where ``clear_refs`` is not writable, RSS is sampled every
  millisecond by a thread (:mod:`psutil`), which can miss peaks shorter than that.
* **Exponents.** ``b`` of ``t = a·N^b`` by least squares on ``log t`` against ``log N``
  over the sizes of at least ``fit_min_atoms`` atoms, per component, mode and k-set (and
  the same for peak memory).

Results are written to JSON after every point, so an interrupted run can be resumed
(``resume=True`` reuses the points already in the file when the setup matches).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import json
import math
import os
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from recinet_cli.bench.graphs import jarvis_cells
from recinet_cli.bench.model import (
    _available_bytes,
    _sync,
    _timed,
    _to,
    _z,
    base_cell,
    cell_data,
    make_supercell,
    module_timer,
    pair_memory_bytes,
    supercell_shape,
)
from recinet_cli.errors import RecinetError
from recinet_cli.model.config import ModelConfig
from recinet_cli.model.embedding import AtomEmbedding, EdgeEmbedding
from recinet_cli.model.kvectors import kvector_set
from recinet_cli.model.local_conv import PotNetConv
from recinet_cli.model.recinet import ReciNet, prepare_inputs
from recinet_cli.model.reciprocal import ReciprocalUpdate
from recinet_cli.structures.graph import GraphParams

#: Default target sizes (atoms per cell).
DEFAULT_SIZES = (1, 8, 27, 64, 125, 216, 512, 1000)
#: Timed components, in the order they are timed and shown.
COMPONENTS = ("model", "local", "reciprocal")
#: ``forward``: eval + no_grad; ``backward``: eval forward with autograd, then backward.
MODES = ("forward", "backward")
KSETS = ("sphere", "box")
#: Smallest size (atoms) that enters the exponent fits by default.
FIT_MIN_ATOMS = 27
#: Format version of the JSON file (a resume refuses other versions).
JSON_VERSION = 1
#: The one-line error when ``--plot`` is asked for without matplotlib.
PLOT_EXTRA_HINT = 'install the plot extra: pip install "recinet[plot]"'


# --------------------------------------------------------------------------- results


@dataclass
class ScalingPoint:
    """One supercell and k-set.

    Attributes:
        kset: ``sphere`` or ``box``.
        target_atoms: the requested size; ``atoms`` is what the tiling gave.
        supercell: the tiling ``(n1, n2, n3)`` of the base cell.
        edges, kvectors, pairs: graph edges E, k-vectors K and (atom, k) pairs P = N·K.
        graph_seconds: building the kNN graph (featurizer), once, s.
        prepare_seconds: k-vectors and pairs (:func:`prepare_inputs`), once, s.
        repeats: timed rounds per mode.
        seconds: ``{mode: {component: [s, ...]}}`` every timed call.
        min_seconds: ``{mode: {component: s}}`` the fastest call: the figure shown, plotted
            and fitted (on a shared machine, load only ever adds time).
        median_seconds: ``{mode: {component: s}}`` medians of ``seconds``.
        peak_bytes: ``{mode: {component: bytes}}`` peak memory of one call (see the module
            docstring for what is measured on each device); ``None`` when not measurable.
        in_situ_forward_seconds: ``{"local": s, "reciprocal": s}`` the time spent inside
            those modules during the whole-model forwards (hooks; the fastest call).
        error: why the point was not measured (the figures are then empty).
    """

    kset: str
    target_atoms: int
    atoms: int
    supercell: tuple[int, int, int]
    edges: int = 0
    kvectors: int = 0
    pairs: int = 0
    graph_seconds: float = 0.0
    prepare_seconds: float = 0.0
    repeats: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    min_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    median_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    peak_bytes: dict[str, dict[str, int | None]] = field(default_factory=dict)
    in_situ_forward_seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScalingPoint:
        """Inverse of :func:`dataclasses.asdict` (JSON lists back to tuples)."""
        values = dict(d)
        values["supercell"] = tuple(values["supercell"])
        return cls(**values)


@dataclass
class PowerFit:
    """``value = prefactor · atoms^exponent`` fitted on log-log (least squares).

    ``quantity`` is ``time`` (prefactor in s) or ``memory`` (prefactor in bytes);
    ``atoms`` are the sizes used; ``r2`` is the coefficient of determination in log space
    (``None`` with only two points, where it is trivially 1).
    """

    kset: str
    mode: str
    component: str
    quantity: str
    exponent: float | None
    prefactor: float | None
    r2: float | None
    atoms: list[int]


@dataclass
class ScalingResult:
    """Everything one ``recinet bench scaling`` run measured (or resumed)."""

    setup: dict[str, Any]
    points: list[ScalingPoint]
    fits: list[PowerFit] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "benchmark": "scaling",
            "version": JSON_VERSION,
            "setup": self.setup,
            "points": [asdict(p) for p in self.points],
            "fits": [asdict(f) for f in self.fits],
        }

    def fit(self, kset: str, mode: str, component: str, quantity: str = "time") -> PowerFit | None:
        """The fit of one curve, if it was made."""
        for f in self.fits:
            if (f.kset, f.mode, f.component, f.quantity) == (kset, mode, component, quantity):
                return f
        return None


# --------------------------------------------------------------------------- exponents


def fit_power_law(atoms: Sequence[float], values: Sequence[float | None]) -> tuple[float, float, float | None] | None:
    """``(exponent b, prefactor a, r2)`` of ``value = a · atoms^b`` by least squares on
    ``log value`` against ``log atoms``; pairs with a missing or non-positive value are
    dropped. ``None`` with fewer than two distinct sizes left."""
    pts = [(float(n), float(v)) for n, v in zip(atoms, values) if v is not None and v > 0 and math.isfinite(v)]
    if len({n for n, _ in pts}) < 2:
        return None
    x = np.log([n for n, _ in pts])
    y = np.log([v for _, v in pts])
    b, log_a = np.polyfit(x, y, 1)
    r2: float | None = None
    if len(pts) > 2:
        resid = y - (b * x + log_a)
        total = float(((y - y.mean()) ** 2).sum())
        r2 = 1.0 - float((resid**2).sum()) / total if total > 0 else None
    return float(b), float(math.exp(log_a)), r2


def fit_exponents(points: Sequence[ScalingPoint], fit_min_atoms: int = FIT_MIN_ATOMS) -> list[PowerFit]:
    """A :class:`PowerFit` per (k-set, mode, component, quantity) over the measured points of
    at least ``fit_min_atoms`` atoms (``exponent`` is ``None`` where fewer than two remain)."""
    fits: list[PowerFit] = []
    ksets = list(dict.fromkeys(p.kset for p in points))
    modes = [m for m in MODES if any(m in p.min_seconds for p in points)]
    for kset in ksets:
        pts = sorted(
            (p for p in points if p.kset == kset and p.error is None and p.atoms >= fit_min_atoms),
            key=lambda p: p.atoms,
        )
        for mode in modes:
            for comp in COMPONENTS:
                for quantity in ("time", "memory"):
                    use = [p for p in pts if mode in p.min_seconds]
                    if quantity == "time":
                        vals: list[float | None] = [p.min_seconds[mode].get(comp) for p in use]
                    else:
                        vals = [_as_float(p.peak_bytes.get(mode, {}).get(comp)) for p in use]
                    got = fit_power_law([p.atoms for p in use], vals)
                    b, a, r2 = got if got is not None else (None, None, None)
                    fits.append(PowerFit(kset, mode, comp, quantity, b, a, r2, [p.atoms for p in use]))
    return fits


def _as_float(v: int | None) -> float | None:
    return None if v is None else float(v)


# --------------------------------------------------------------------------- peak memory


_LIBC: Any = None


def _malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim(0)``; no-op elsewhere)."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    if _LIBC and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def _status_bytes(key: str) -> int | None:
    """``VmRSS``/``VmHWM`` of this process from ``/proc/self/status``, in bytes."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def _reset_hwm() -> bool:
    """Reset this process's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


class PeakMemory:
    """Peak memory of one call on ``device``, in bytes (see the module docstring).

    ``method`` names what is measured: ``cuda_max_memory_allocated``, ``rss_hwm`` (CPU,
    exact RSS high-water mark), ``rss_sampled_1ms`` (CPU, psutil sampling thread) or
    ``none`` (nothing available: :meth:`measure` returns ``None``).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.method = "cuda_max_memory_allocated"
        elif _reset_hwm():
            self.method = "rss_hwm"
        elif _psutil_rss() is not None:
            self.method = "rss_sampled_1ms"
        else:
            self.method = "none"

    @property
    def description(self) -> str:
        """One line for humans: what the memory figures are."""
        return {
            "cuda_max_memory_allocated": "CUDA: torch.cuda.max_memory_allocated during the call, minus the allocation before it",
            "rss_hwm": "CPU: process RSS high-water mark (VmHWM, reset via /proc/self/clear_refs after gc and "
            "malloc_trim) minus RSS before the call",
            "rss_sampled_1ms": "CPU: peak of the process RSS sampled every 1 ms (psutil) minus RSS before the call; "
            "peaks shorter than 1 ms can be missed",
            "none": "not measured (no /proc/self/clear_refs, no psutil)",
        }[self.method]

    def measure(self, fn: Callable[[], Any]) -> int | None:
        """Run ``fn()`` once and return its peak memory increase in bytes."""
        if self.method == "cuda_max_memory_allocated":
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            fn()
            _sync(self.device)
            return int(torch.cuda.max_memory_allocated(self.device) - before)
        if self.method == "none":
            fn()
            return None
        gc.collect(1)  # young generations only: a full pass costs ~0.3 s once torch is imported
        _malloc_trim()
        if self.method == "rss_hwm":
            _reset_hwm()
            before = _status_bytes("VmRSS")
            fn()
            peak = _status_bytes("VmHWM")
            return None if before is None or peak is None else max(0, peak - before)
        with _rss_sampler() as sampled:
            fn()
        before, peak = sampled
        return max(0, peak - before)


def _psutil_rss() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


@contextlib.contextmanager
def _rss_sampler(interval: float = 1e-3) -> Iterator[list[int]]:
    """Yields ``[rss_before, peak_rss]`` (bytes), the peak filled in on exit."""
    import psutil

    proc = psutil.Process()
    before = int(proc.memory_info().rss)
    out = [before, before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out[1] = max(out[1], int(proc.memory_info().rss))
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out[1] = max(out[1], int(proc.memory_info().rss))


# --------------------------------------------------------------------------- cells


def default_base_cell(path: str, gmax: float, box: tuple[int, int, int] = (2, 2, 2)) -> tuple[str, np.ndarray, np.ndarray, list[str]]:
    """The densest (smallest volume) 1-atom cell of ``path`` whose ``sphere`` k-set at
    ``gmax`` (Å^-1) is not empty; if every 1-atom cell has an empty set, the densest one."""
    best: tuple[tuple[bool, float], tuple[str, np.ndarray, np.ndarray, list[str]]] | None = None
    for cell in jarvis_cells(path):
        if len(cell[3]) != 1:
            continue
        lattice = torch.as_tensor(cell[1], dtype=torch.float64).reshape(1, 3, 3)
        k = int(kvector_set(lattice, "sphere", gmax, box)[0].shape[0])
        key = (k == 0, abs(float(np.linalg.det(cell[1]))))
        if best is None or key < best[0]:
            best = (key, cell)
    if best is None:
        raise RecinetError(f"{path}: no 1-atom cell found (pass --cell JVASP-...)")
    return best[1]


def _formula(jid: str, lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray) -> str:
    from recinet_cli.structures.crystal import Crystal

    return Crystal.create(jid, "jarvis", lattice, frac, numbers).formula


# --------------------------------------------------------------------------- components


def capture_block_inputs(model: ReciNet, inputs: dict[str, Tensor]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The positional inputs every block's local conv and reciprocal block received in one
    no-grad forward of ``model`` (detached): ``(conv_args, reciprocal_args)``, one tuple per
    block."""
    convs: list[tuple[Any, ...]] = []
    recips: list[tuple[Any, ...]] = []
    handles = []
    for block in model.backbone.blocks:
        handles.append(block.conv.register_forward_pre_hook(lambda m, a: convs.append(a)))
        if hasattr(block, "reciprocal"):
            handles.append(block.reciprocal.register_forward_pre_hook(lambda m, a: recips.append(a)))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return convs, recips


def component_calls(model: ReciNet, inputs: dict[str, Tensor]) -> dict[str, Callable[[], Tensor]]:
    """``{component: call}``: each call runs that component once and returns a scalar (the sum
    of its outputs) to backpropagate from. Run them under ``no_grad`` for the forward mode."""
    bb = model.backbone
    conv_args, recip_args = capture_block_inputs(model, inputs)
    blocks = list(bb.blocks)

    def whole() -> Tensor:
        return model(**inputs).sum()

    def local() -> Tensor:
        h0 = bb.atom_embedding(inputs["atomic_numbers"])  # [N, d]
        v = bb.edge_embedding(inputs["edge_len"])  # [E, d]
        total = torch.zeros((), device=h0.device)
        for i, (block, args) in enumerate(zip(blocks, conv_args)):
            h = h0 if i == 0 else _leaf(args[0])
            total = total + block.conv(h, v, args[2]).sum()
        return total

    def reciprocal() -> Tensor:
        total = torch.zeros((), device=inputs["frac"].device)
        for block, args in zip(blocks, recip_args):
            total = total + block.reciprocal(_leaf(args[0]), *args[1:]).sum()
        return total

    return {"model": whole, "local": local, "reciprocal": reciprocal}


def _leaf(t: Tensor) -> Tensor:
    """A fresh leaf sharing ``t``'s storage, requiring grad when autograd is on."""
    return t.detach().requires_grad_(torch.is_grad_enabled())


def _mode_call(call: Callable[[], Tensor], mode: str) -> Callable[[], Any]:
    """``call`` under ``no_grad`` (``forward``) or followed by ``.backward()`` (``backward``)."""
    if mode == "forward":

        def forward() -> Any:
            with torch.no_grad():
                return call()

        return forward

    def forward_backward() -> Any:
        call().backward()

    return forward_backward


def _timed_in_situ(fn: Callable[[], Any], model: nn.Module, device: torch.device) -> tuple[float, dict[str, float]]:
    """Time ``fn()`` with :func:`module_timer` hooks on the local modules (embeddings, local
    convs) and on the reciprocal blocks: ``(seconds, {"local": s, "reciprocal": s})``."""
    with contextlib.ExitStack() as stack:
        local = [stack.enter_context(module_timer(model, kind, device)) for kind in (AtomEmbedding, EdgeEmbedding, PotNetConv)]
        recip = stack.enter_context(module_timer(model, ReciprocalUpdate, device))
        seconds = _timed(fn, device)[0]
        return seconds, {"local": sum(t[0] for t in local), "reciprocal": recip[0]}


def time_components(
    model: ReciNet,
    inputs: dict[str, Tensor],
    device: torch.device,
    modes: Sequence[str] = MODES,
    repeats: int = 5,
    budget_seconds: float = 60.0,
    memory: PeakMemory | None = None,
) -> dict[str, Any]:
    """Time and measure the three components (see the module docstring) on one cell.

    Returns ``{"repeats", "seconds", "min_seconds", "median_seconds", "peak_bytes",
    "in_situ_forward_seconds"}``
    as in :class:`ScalingPoint`.
    """
    model.eval()
    calls = component_calls(model, inputs)
    out: dict[str, Any] = {
        "repeats": {}, "seconds": {}, "min_seconds": {}, "median_seconds": {}, "peak_bytes": {},
        "in_situ_forward_seconds": {},
    }

    def clear() -> None:
        model.zero_grad(set_to_none=True)

    for mode in modes:
        runs = {name: _mode_call(call, mode) for name, call in calls.items()}
        samples: dict[str, list[float]] = {name: [] for name in runs}
        in_situ: dict[str, list[float]] = {"local": [], "reciprocal": []}
        warm = 0.0
        for fn in runs.values():  # warm-up, also the budget estimate
            clear()
            warm += _timed(fn, device)[0]
        warm = max(warm, 1e-9)
        rounds = max(1, min(int(budget_seconds // warm), max(repeats, min(10 * repeats, int(1.0 // warm)))))
        for _ in range(rounds):
            for name, fn in runs.items():
                clear()
                if mode == "forward" and name == "model":
                    seconds, inside = _timed_in_situ(fn, model, device)
                    for key, value in inside.items():
                        in_situ[key].append(value)
                else:
                    seconds = _timed(fn, device)[0]
                samples[name].append(seconds)
        peaks: dict[str, int | None] = {}
        for name, fn in runs.items():
            clear()
            peaks[name] = memory.measure(fn) if memory is not None else None
        clear()
        out["repeats"][mode] = rounds
        out["seconds"][mode] = samples
        out["min_seconds"][mode] = {name: min(s) for name, s in samples.items()}
        out["median_seconds"][mode] = {name: statistics.median(s) for name, s in samples.items()}
        out["peak_bytes"][mode] = peaks
        if mode == "forward":
            out["in_situ_forward_seconds"] = {k: min(v) for k, v in in_situ.items()}
    return out


def measure_point(
    model: ReciNet,
    base: tuple[str, np.ndarray, np.ndarray, np.ndarray],
    target: int,
    device: torch.device,
    modes: Sequence[str],
    repeats: int,
    budget_seconds: float,
    memory: PeakMemory | None,
    params: GraphParams = GraphParams(),
) -> ScalingPoint:
    """Build the supercell of ``base`` (jid, lattice, frac, numbers) closest to ``target``
    atoms, its graph and reciprocal inputs, and measure ``model`` on it.

    A cell whose reciprocal temporaries would not fit in 60 % of the free memory, or that
    runs out of memory, comes back with ``error`` set.
    """
    jid, lattice, frac, numbers = base
    max_n = max(16, math.ceil((target / len(numbers)) ** (1 / 3)) + 2)
    shape = supercell_shape(len(numbers), target, max_n=max_n)
    lat, fr, nums = make_supercell(lattice, frac, numbers, shape)
    t0 = time.perf_counter()
    data = cell_data(f"{jid}x{'x'.join(map(str, shape))}", lat, fr, nums, params)
    graph_seconds = time.perf_counter() - t0
    from torch_geometric.data import Batch

    t0 = time.perf_counter()
    inputs = prepare_inputs(Batch.from_data_list([data]), model.config)
    prepare_seconds = time.perf_counter() - t0
    point = ScalingPoint(
        kset=model.config.kset,
        target_atoms=target,
        atoms=int(inputs["atomic_numbers"].shape[0]),
        supercell=shape,
        edges=int(inputs["edge_index"].shape[1]),
        kvectors=int(inputs["k_int"].shape[0]),
        pairs=int(inputs["pair_k"].shape[0]),
        graph_seconds=graph_seconds,
        prepare_seconds=prepare_seconds,
    )
    need = pair_memory_bytes(point.pairs) * (1 + model.config.blocks * ("backward" in modes))
    free = _available_bytes(device)
    if free is not None and need > 0.6 * free:
        point.error = f"not run: ~{need / 2**30:.1f} GiB of reciprocal temporaries (P = {point.pairs:,}), {free / 2**30:.1f} GiB free"
        return point
    try:
        figures = time_components(model, _to(inputs, device), device, modes, repeats, budget_seconds, memory)
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "memory" not in str(exc).lower():
            raise
        point.error = f"out of memory: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return point
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for key, value in figures.items():
        setattr(point, key, value)
    return point


# --------------------------------------------------------------------------- driver


def resolve_device(device: str | None) -> torch.device:
    """``None`` -> cuda when available, else cpu; a CUDA device without CUDA is an error."""
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise RecinetError(f"--device: unknown device {device!r} (cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RecinetError("--device cuda: CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise RecinetError(f"--device must be cpu or cuda, got {device!r}")
    return dev


def _setup_key(setup: dict[str, Any]) -> dict[str, Any]:
    """The parts of the setup that must match for measured points to be reused."""
    keys = ("base_cell", "model", "device", "modes", "graph", "dtype")
    return {k: setup.get(k) for k in keys}


def load_resume(path: Path, setup: dict[str, Any]) -> list[ScalingPoint]:
    """Points of an earlier run in ``path`` whose setup matches ``setup`` (none when the file
    does not exist); a file from another setup is an error that says what differs."""
    if not path.exists():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RecinetError(f"--resume: {path} is not a readable scaling JSON ({exc})") from None
    if not isinstance(old, dict) or old.get("benchmark") != "scaling" or old.get("version") != JSON_VERSION:
        raise RecinetError(f"--resume: {path} is not a version-{JSON_VERSION} bench scaling JSON")
    want, got = _setup_key(setup), _setup_key(old.get("setup", {}))
    differ = [k for k in want if want[k] != got[k]]
    if differ:
        raise RecinetError(
            f"--resume: {path} was measured with a different {', '.join(differ)}; "
            "remove it, pass another --json, or drop --resume"
        )
    return [ScalingPoint.from_dict(p) for p in old.get("points", [])]


def write_json(path: Path, result: ScalingResult) -> None:
    """Write ``result`` atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result.as_dict(), indent=2))
    os.replace(tmp, path)


def run_scaling(
    path: str,
    sizes: Sequence[int] = DEFAULT_SIZES,
    ksets: Sequence[str] = KSETS,
    device: str | torch.device | None = None,
    repeats: int = 5,
    backward: bool = True,
    config: ModelConfig | None = None,
    cell: str | None = None,
    fit_min_atoms: int = FIT_MIN_ATOMS,
    json_path: Path | None = None,
    resume: bool = False,
    budget_seconds: float = 60.0,
    threads: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> ScalingResult:
    """Measure every (k-set, size) point, fit the exponents and return the figures.

    Args:
        path: JARVIS dft_3d-style ``json.gz`` holding the base cell.
        sizes: target atoms per cell.
        ksets: k-sets to measure (``sphere``, ``box``); the model is otherwise ``config``.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (default: cuda when available).
        repeats: timed rounds per point and mode: at least this many (up to 10x for cells
            that take milliseconds), fewer only when over ``budget_seconds``.
        backward: also measure forward+backward.
        config: the model (default: the paper's, :class:`ModelConfig`); its ``kset`` is
            replaced by each of ``ksets``.
        cell: JARVIS id of the base cell (default: :func:`default_base_cell`).
        fit_min_atoms: smallest size entering the exponent fits.
        json_path: write the figures here after every point.
        resume: reuse the points already in ``json_path`` (same setup required).
        budget_seconds: rough time budget per point and mode for the timed rounds, s.
        threads: torch intra-op threads for the run (default: torch's own choice); restored
            afterwards.
        seed: seeds the (untrained) weights.
        log: progress callback, one line per point.
    """
    say = log or (lambda _msg: None)
    dev = resolve_device(str(device) if device is not None else None)
    if repeats < 1:
        raise RecinetError("--repeats must be >= 1")
    bad = [k for k in ksets if k not in KSETS]
    if bad or not ksets:
        raise RecinetError(f"--kset: expected sphere and/or box, got {','.join(ksets) or 'nothing'}")
    if resume and json_path is None:
        raise RecinetError("--resume needs --json OUT (the file to resume from)")
    if threads is not None and threads < 1:
        raise RecinetError(f"--threads must be >= 1, got {threads}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(path, sizes, ksets, dev, repeats, backward, config, cell, fit_min_atoms, json_path, resume,
                    budget_seconds, seed, say)
    finally:
        torch.set_num_threads(before)


def _run(
    path: str, sizes: Sequence[int], ksets: Sequence[str], dev: torch.device, repeats: int, backward: bool,
    config: ModelConfig | None, cell: str | None, fit_min_atoms: int, json_path: Path | None, resume: bool,
    budget_seconds: float, seed: int, say: Callable[[str], None],
) -> ScalingResult:
    config = config or ModelConfig()
    params = GraphParams()
    jid, lattice, frac, elements = base_cell(path, cell) if cell else default_base_cell(path, config.gmax, config.box)
    numbers = _z(elements)
    memory = PeakMemory(dev)
    modes = list(MODES if backward else MODES[:1])
    model_cfg = {k: v for k, v in config.to_dict().items() if k != "kset"}
    setup: dict[str, Any] = {
        "data": str(path),
        "base_cell": jid,
        "base_formula": _formula(jid, lattice, frac, numbers),
        "base_atoms": len(numbers),
        "base_volume_per_atom": abs(float(np.linalg.det(lattice))) / len(numbers),
        "model": model_cfg,
        "graph": asdict(params),
        "device": str(dev),
        "dtype": "float32",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "modes": modes,
        "repeats": repeats,
        "budget_seconds": budget_seconds,
        "fit_min_atoms": fit_min_atoms,
        "memory_method": memory.method,
        "memory_description": memory.description,
        "seed": seed,
    }
    done = {(p.kset, p.target_atoms): p for p in (load_resume(json_path, setup) if resume and json_path else [])}
    result = ScalingResult(setup, [])
    todo = [(k, n) for k in ksets for n in sizes]
    for kset in ksets:
        model: ReciNet | None = None
        for n in sizes:
            i = len(result.points) + 1
            prev = done.get((kset, n))
            if prev is not None:
                result.points.append(prev)
                say(f"[{i}/{len(todo)}] {kset}, {prev.atoms:,} atoms: reused from {json_path}")
                continue
            if model is None:
                torch.manual_seed(seed)
                model = ReciNet(ModelConfig.from_dict({**config.to_dict(), "kset": kset})).to(dev)
            say(f"[{i}/{len(todo)}] {kset}, target {n:,} atoms: measuring")
            t0 = time.perf_counter()
            point = measure_point(
                model, (jid, lattice, frac, numbers), n, dev, modes, repeats, budget_seconds, memory, params
            )
            result.points.append(point)
            say(_progress_line(i, len(todo), point, jid, time.perf_counter() - t0))
            if json_path is not None:
                result.fits = fit_exponents(result.points, fit_min_atoms)
                write_json(json_path, result)
    result.fits = fit_exponents(result.points, fit_min_atoms)
    if json_path is not None:
        write_json(json_path, result)
    return result


def _progress_line(i: int, total: int, p: ScalingPoint, jid: str, seconds: float) -> str:
    head = f"[{i}/{total}] {p.kset}, {p.atoms:,} atoms ({'x'.join(map(str, p.supercell))} of {jid}), K={p.kvectors:,}"
    if p.error is not None:
        return f"{head}: {p.error}"
    fwd = p.min_seconds.get("forward", {}).get("model")
    bwd = p.min_seconds.get("backward", {}).get("model")
    tail = f"forward {fwd:.4f} s" + (f", forward+backward {bwd:.4f} s" if bwd is not None else "")
    return f"{head}: {tail} ({seconds:.1f} s)"


# --------------------------------------------------------------------------- plot


def require_matplotlib() -> None:
    """Raise the one-line install hint when matplotlib (the ``plot`` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RecinetError(PLOT_EXTRA_HINT) from None


def plot_scaling(result: ScalingResult, path: Path) -> None:
    """Log-log PNG: time (top) and peak memory (bottom) against atoms per cell, one column
    per mode, one line per component (colour) and k-set (solid ``sphere``, dashed ``box``),
    with the fitted exponent in each label and grey N^1 / N^2 guides."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    modes = list(result.setup["modes"])
    fig = Figure(figsize=(5.5 * len(modes), 9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(modes), squeeze=False)
    colours = {"model": "C0", "local": "C1", "reciprocal": "C2"}
    styles = {"sphere": "-", "box": "--"}
    ksets = list(dict.fromkeys(p.kset for p in result.points))
    titles = {"forward": "forward (eval, no grad)", "backward": "forward + backward"}
    for col, mode in enumerate(modes):
        for row, quantity in enumerate(("time", "memory")):
            ax = axes[row][col]
            xs_all: list[float] = []
            for kset in ksets:
                pts = sorted((p for p in result.points if p.kset == kset and p.error is None and mode in p.min_seconds),
                             key=lambda p: p.atoms)
                for comp in COMPONENTS:
                    if quantity == "time":
                        xy = [(p.atoms, p.min_seconds[mode][comp]) for p in pts]
                    else:
                        xy = [(p.atoms, p.peak_bytes[mode][comp] / 2**20) for p in pts if (p.peak_bytes[mode].get(comp) or 0) > 0]
                    xy = [(x, y) for x, y in xy if y > 0]
                    if not xy:
                        continue
                    f = result.fit(kset, mode, comp, quantity)
                    slope = f" (b={f.exponent:.2f})" if f is not None and f.exponent is not None else ""
                    ax.plot(*zip(*xy), styles.get(kset, ":"), color=colours[comp], marker="o", ms=3,
                            label=f"{comp}, {kset}{slope}")
                    xs_all += [x for x, _ in xy]
            if xs_all and max(xs_all) > min(xs_all):
                # slope guides over the last decade, ending above the highest curve
                hi = max(xs_all)
                lo = max(min(xs_all), hi / 10)
                top = 2 * max(y for line in ax.lines for y in line.get_ydata())
                for power, label in ((1, "∝N"), (2, "∝N²")):
                    ax.plot([lo, hi], [top / (hi / lo) ** power, top], ":", color="0.5", lw=1)
                    ax.annotate(label, (lo, top / (hi / lo) ** power), color="0.4", fontsize=8, ha="right")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("atoms per cell")
            ax.set_ylabel("time per call (s, fastest of the rounds)" if quantity == "time" else "peak memory increase (MiB)")
            ax.set_title(titles[mode] if row == 0 else f"{titles[mode]}: memory")
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
    s = result.setup
    fig.suptitle(
        f"recinet bench scaling: supercells of {s['base_cell']} ({s['base_formula']}), {s['device']}, "
        f"{s['threads']} threads; memory: {s['memory_method']}",
        fontsize=9,
    )
    fig.savefig(path, dpi=120)
