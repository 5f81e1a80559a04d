"""Benchmark: the paper's Table 5 efficiency figures for one task, measured on this machine.

``recinet bench speed --task DATASET:PROP`` measures, in one process, for the task's paper
preset model (blocks from the dataset plugin's preset; hidden 256, sphere k-set):

1. **Featurize throughput** (structures/s): the task's structures (the first ``featurize_n``
   the dataset plugin returns) through :func:`~recinet_cli.featurize.worker.featurize_crystal`,
   the function every featurizer worker runs, one after the other in this process (one
   process, so the figure is per core; ``recinet featurize`` scales it with ``--workers``).
2. **Parameter counts**: the task's model; a 1-target model of the task's preset; the same
   for the paper's Table 5 configuration (JARVIS formation energy, its preset) and five of
   those (what "5-task Para." means for single-task models); and the 5-target ReciNet-MT
   model (``mt-moe`` head, the JARVIS multi-task preset: 3 blocks), all with
   :func:`~recinet_cli.model.export.parameter_count`.
3. **Inference** (ms/material): a seeded, untrained model of the task's configuration (the
   timing does not depend on the weights' values) in eval mode on the task's test split
   (its first ``infer_n`` structures), through
   :func:`recinet_cli.bench.predict.model_only`: batches are collated and their k-vectors
   prepared before the forward timing (timed separately: "with inputs" adds them), one
   untimed forward first, CUDA synchronised around each timed forward. At ``batch_size``
   (64) over all of them and at batch size 1 over the first ``single_n``.
4. **Training time per epoch**: the training engine's step (the same
   :class:`~recinet_cli.train.data.GraphTargetDataset` and PyG ``DataLoader``, k-vectors,
   forward, masked L1 + auxiliary loss, backward, Adam with the engine's weight-decay
   groups, OneCycle step) on a *slice* of the training split: ``warmup`` untimed steps, then
   ``slice_steps`` timed steps (data loading included) over a seeded shuffle of the training
   structures (at most one epoch: when the slice covers the epoch, exactly one epoch is timed).
   The per-epoch figure is **extrapolated**: mean step seconds x steps per epoch
   (``ceil(n_train / batch_size)``, every step costed as a full batch). The validation
   pass the engine runs after each epoch is estimated separately from 3. (val structures x
   batched ms/material with inputs).
5. **Peak memory** of 3. (the batch-``batch_size`` run) and 4. (building the model, loading
   the training graphs, the slice): on CUDA ``torch.cuda.max_memory_allocated`` (after
   ``reset_peak_memory_stats``) minus the allocation at the start; on CPU the peak resident
   set size (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``; else RSS
   sampled every 5 ms with psutil) minus the RSS at the start. ``method`` says which.

The paper's figures (:data:`PAPER_TABLE5`, NVIDIA A100, JARVIS formation energy) are printed
beside ours with ``ratio = ours / paper``; they are references, never goals checked here.

Resuming: the result is written to JSON after every section; with ``resume`` a section
already present in that file (measured with the same settings) is kept, not re-measured.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recinet_cli.bench.fastpath import FastPathFigures, measure_fastpath
from recinet_cli.bench.model import _sync
from recinet_cli.errors import RecinetError

__all__ = [
    "JARVIS_MT_PROPERTIES",
    "PAPER_TABLE5",
    "SECTIONS",
    "DeviceInfo",
    "FeaturizeFigures",
    "Figure",
    "InferenceFigures",
    "MemoryFigure",
    "PaperTable5",
    "ParameterFigures",
    "SpeedBenchResult",
    "SpeedSettings",
    "TrainingFigures",
    "device_info",
    "run_speed_bench",
]

#: The five JARVIS properties of ReciNet-MT (paper Section 5.4 and Appendix C, SPEC §6).
JARVIS_MT_PROPERTIES = ("formation_energy", "bandgap_opt", "total_energy", "bandgap_mbj", "ehull")
#: The task of the paper's Table 5.
PAPER_TASK = "jarvis:formation_energy"
#: Used only when the jarvis plugin (its presets) is not installed: SPEC §6.
_FALLBACK_PRESETS = {"jarvis:formation_energy": {"blocks": 4}, "jarvis-mt": {"blocks": 3}}

#: Section names, in the order they run.
SECTIONS = ("featurize", "parameters", "inference", "training", "fastpath")


@dataclass(frozen=True)
class PaperTable5:
    """The paper's figures for ReciNet and ReciNet-MT (NVIDIA A100).

    Seconds per epoch, hours in total, milliseconds per material, parameter counts; the
    training split size is the paper's (Appendix B.1). The paper reports no memory figure
    and no featurization throughput.
    """

    task: str
    device: str
    train_structures: int
    time_per_epoch_s: float
    epochs: int
    total_hours: float
    inference_ms: float
    params_1_task: float
    params_5_tasks: float
    mt_time_per_epoch_s: float
    mt_epochs: int
    mt_total_hours: float
    mt_inference_ms: float
    mt_params_5_tasks: float

    @property
    def train_ms_per_structure(self) -> float:
        """Derived: time per epoch / training structures (ms), comparable across tasks."""
        return 1e3 * self.time_per_epoch_s / self.train_structures

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "train_ms_per_structure": self.train_ms_per_structure}


#: Copied from the paper, Table 5 ("Efficiency comparison ... on JARVIS formation energy
#: prediction"), rows "ReciNet" (35 s/epoch, 500 epochs, 4.8 h, 8.2 ms, 3.3 M, 16.5 M) and
#: "ReciNet-MT" (69 s, 500, 9.6 h, 16.2 ms, N/A, 9.5 M); "Experiments are conducted on
#: NVIDIA A100 GPUs" (Section 5); training split of formation energy: 44,578 (Appendix B.1).
PAPER_TABLE5 = PaperTable5(
    task=PAPER_TASK,
    device="NVIDIA A100",
    train_structures=44_578,
    time_per_epoch_s=35.0,
    epochs=500,
    total_hours=4.8,
    inference_ms=8.2,
    params_1_task=3.3e6,
    params_5_tasks=16.5e6,
    mt_time_per_epoch_s=69.0,
    mt_epochs=500,
    mt_total_hours=9.6,
    mt_inference_ms=16.2,
    mt_params_5_tasks=9.5e6,
)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or not math.isfinite(a) or not math.isfinite(b):
        return None
    return a / b


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SpeedSettings:
    """What a run measured with (a resumed run must use the same).

    ``hidden``/``blocks``: overrides of the task's paper configuration (``None``: the
    paper's); ``device``: as requested (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
    """

    task: str
    data: str | None = None
    device: str = "auto"
    batch_size: int = 64
    slice_steps: int = 10
    warmup: int = 2
    featurize_n: int = 1000
    infer_n: int = 512
    single_n: int = 128
    hidden: int | None = None
    blocks: int | None = None
    seed: int = 0
    precision: str = "auto"
    fastpath: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, other: Mapping[str, Any]) -> list[str]:
        """``key: other -> self`` for every setting that differs from ``other``."""
        mine = self.as_dict()
        return [f"{k}: {other.get(k)!r} -> {v!r}" for k, v in mine.items() if other.get(k) != v]


@dataclass(frozen=True)
class DeviceInfo:
    """The device measured on: ``type`` (cpu/cuda), ``name`` (GPU name or CPU model),
    logical CPUs, torch threads and torch version."""

    type: str
    name: str
    cpus: int
    threads: int
    torch: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        if self.type == "cuda":
            return f"{self.name} (CUDA)"
        return f"{self.name}, {self.cpus} logical CPUs, {self.threads} torch threads"


@dataclass(frozen=True)
class MemoryFigure:
    """Peak memory of one section, bytes. ``method`` names what was read (see the module
    docstring); ``delta`` = ``peak - baseline``."""

    method: str
    baseline_bytes: int
    peak_bytes: int

    @property
    def delta_bytes(self) -> int:
        return max(0, self.peak_bytes - self.baseline_bytes)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "delta_bytes": self.delta_bytes, "delta_mib": self.delta_bytes / 2**20,
                "peak_mib": self.peak_bytes / 2**20}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MemoryFigure:
        return cls(str(d["method"]), int(d["baseline_bytes"]), int(d["peak_bytes"]))


@dataclass(frozen=True)
class FeaturizeFigures:
    """Graph building for ``structures`` crystals in one process (seconds; ``failed`` raised
    a StructureError and are not counted in the rates)."""

    structures: int
    failed: int
    atoms: int
    edges: int
    seconds: float

    @property
    def structures_per_second(self) -> float:
        return self.structures / self.seconds if self.seconds > 0 else math.nan

    @property
    def ms_per_structure(self) -> float:
        return 1e3 * self.seconds / self.structures if self.structures else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "structures_per_second": self.structures_per_second,
                "ms_per_structure": self.ms_per_structure,
                "atoms_per_second": self.atoms / self.seconds if self.seconds > 0 else math.nan}


@dataclass(frozen=True)
class ParameterFigures:
    """Trainable parameter counts (each shared tensor once) and the configs they were
    counted for (``ModelConfig.to_dict()``).

    ``task``: the model the task trains (``mt-moe`` when it has several properties);
    ``one_task``: a 1-target ``scalar`` model of the task's preset; ``paper_one_task``: the
    same for the paper's Table 5 task (JARVIS formation energy); ``mt``: ReciNet-MT, 5 JARVIS
    targets, ``mt-moe`` head, JARVIS multi-task preset.
    """

    task: int
    task_config: dict[str, Any]
    one_task: int
    one_task_config: dict[str, Any]
    paper_one_task: int
    paper_one_task_config: dict[str, Any]
    mt: int
    mt_config: dict[str, Any]

    @property
    def five_single_task(self) -> int:
        """Five single-task models of the paper's Table 5 configuration (its "5-task Para.")."""
        return 5 * self.paper_one_task

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "five_single_task": self.five_single_task}


@dataclass(frozen=True)
class InferenceFigures:
    """Model-only inference on the ``split`` split (ms per material; seconds summed over
    batches). ``*_forward_ms``: forward only (inputs ready on the device); ``*_inputs_ms``:
    collate + k-vectors/transfer + forward. ``gflop_per_material``: counted forward matrix
    product FLOPs. ``atoms``/``edges``/``kvectors``/``pairs``: totals over the ``structures``
    (pairs = (atom, k-vector) pairs of the reciprocal block). ``memory``: peak of the batched
    run."""

    split: str
    batch_size: int
    structures: int
    atoms: int
    edges: int
    kvectors: int
    pairs: int
    batched_forward_ms: float
    batched_inputs_ms: float
    single_structures: int
    single_forward_ms: float
    single_inputs_ms: float
    gflop_per_material: float
    memory: MemoryFigure

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["memory"] = self.memory.as_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InferenceFigures:
        values = {f.name: d[f.name] for f in fields(cls)}
        values["memory"] = MemoryFigure.from_dict(d["memory"])
        return cls(**values)


@dataclass(frozen=True)
class TrainingFigures:
    """Training-step timing on a slice of the training split, extrapolated to one epoch.

    Seconds throughout. ``step_seconds``: each timed step (data loading included);
    ``measured_seconds`` their sum (the measured slice, ``measured_steps`` steps,
    ``measured_structures`` structures); ``epoch_seconds`` = mean step x
    ``steps_per_epoch`` (the extrapolation); ``val_seconds_estimate`` = val structures x
    batched inference ms/material with inputs; ``total_hours`` = ``epochs`` x (epoch +
    validation estimate).
    """

    train_structures: int
    val_structures: int
    batch_size: int
    steps_per_epoch: int
    warmup_steps: int
    measured_steps: int
    measured_structures: int
    step_seconds: list[float]
    epochs: int
    lr: float
    final_loss: float
    val_seconds_estimate: float | None
    memory: MemoryFigure

    @property
    def measured_seconds(self) -> float:
        return float(sum(self.step_seconds))

    @property
    def mean_step_seconds(self) -> float:
        return self.measured_seconds / len(self.step_seconds)

    @property
    def median_step_seconds(self) -> float:
        return float(statistics.median(self.step_seconds))

    @property
    def epoch_seconds(self) -> float:
        """Extrapolated: mean step seconds x steps per epoch."""
        return self.mean_step_seconds * self.steps_per_epoch

    @property
    def whole_epoch_measured(self) -> bool:
        return self.measured_steps == self.steps_per_epoch

    @property
    def epoch_with_val_seconds(self) -> float | None:
        if self.val_seconds_estimate is None:
            return None
        return self.epoch_seconds + self.val_seconds_estimate

    @property
    def train_ms_per_structure(self) -> float:
        return 1e3 * self.epoch_seconds / self.train_structures

    @property
    def total_hours(self) -> float:
        return self.epochs * (self.epoch_with_val_seconds or self.epoch_seconds) / 3600

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["memory"] = self.memory.as_dict()
        d.update(measured_seconds=self.measured_seconds, mean_step_seconds=self.mean_step_seconds,
                 median_step_seconds=self.median_step_seconds, epoch_seconds=self.epoch_seconds,
                 whole_epoch_measured=self.whole_epoch_measured,
                 epoch_with_val_seconds=self.epoch_with_val_seconds,
                 train_ms_per_structure=self.train_ms_per_structure, total_hours=self.total_hours)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingFigures:
        values = {f.name: d[f.name] for f in fields(cls)}
        values["memory"] = MemoryFigure.from_dict(d["memory"])
        return cls(**values)


@dataclass(frozen=True)
class Figure:
    """One row of the comparison: ``ours`` and ``paper`` in ``unit`` (``None``: not
    measured / not reported); ``ratio = ours / paper``."""

    name: str
    ours: float | None
    paper: float | None
    unit: str
    note: str = ""
    comparable: bool = True

    @property
    def ratio(self) -> float | None:
        """``ours / paper``; ``None`` when either is missing or the figures are not comparable
        (e.g. a time per epoch of another task, whose training split has another size)."""
        return _ratio(self.ours, self.paper) if self.comparable else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class SpeedBenchResult:
    """Everything one ``recinet bench speed`` run measured (sections may be ``None`` while a
    run is in progress). ``resumed``: sections taken over from an earlier run's JSON."""

    settings: SpeedSettings
    device: DeviceInfo
    task_label: str
    dataset: dict[str, Any] = field(default_factory=dict)
    featurize: FeaturizeFigures | None = None
    parameters: ParameterFigures | None = None
    inference: InferenceFigures | None = None
    training: TrainingFigures | None = None
    fastpath: FastPathFigures | None = None
    resumed: list[str] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        """The comparison rows (ours vs the paper's A100 figures), in display order.

        Figures of the paper's task only (time per epoch, total time, the task model's
        parameters) are marked not comparable for other tasks: their ratio is ``None``.
        """
        p = PAPER_TABLE5
        same_task = self.task_label == p.task
        other = "" if same_task else f"paper: {p.task}, {p.train_structures:,} training structures"
        rows: list[Figure] = []
        f, par, inf, tr = self.featurize, self.parameters, self.inference, self.training
        if f is not None:
            rows.append(Figure("featurize throughput, 1 process", f.structures_per_second, None, "structures/s",
                               f"{f.structures:,} structures; paper: not reported"))
        if tr is not None:
            b = tr.batch_size
            rows += [
                Figure(f"train step, batch {b} (mean of {tr.measured_steps} timed, {tr.warmup_steps} warm-up excluded)",
                       tr.mean_step_seconds, None, "s"),
                Figure(f"train time, measured slice ({tr.measured_steps} steps, {tr.measured_structures:,} structures)",
                       tr.measured_seconds, None, "s"),
                Figure(f"train time/epoch, extrapolated ({tr.steps_per_epoch} steps x mean step, "
                       f"{tr.train_structures:,} structures)", tr.epoch_seconds, p.time_per_epoch_s, "s", other,
                       same_task),
            ]
            if tr.epoch_with_val_seconds is not None:
                rows.append(Figure(f"train time/epoch + validation estimate ({tr.val_structures:,} structures)",
                                   tr.epoch_with_val_seconds, p.time_per_epoch_s, "s", other, same_task))
            rows += [
                Figure("train time per training structure (epoch / structures)", tr.train_ms_per_structure,
                       p.train_ms_per_structure, "ms", "paper: 35 s / 44,578 structures"),
                Figure(f"total training, {tr.epochs} epochs (with validation estimate)", tr.total_hours,
                       p.total_hours, "h", other, same_task and tr.epochs == p.epochs),
            ]
        if inf is not None:
            rows += [
                Figure(f"inference, batch {inf.batch_size}, forward", inf.batched_forward_ms, p.inference_ms,
                       "ms/material", "paper: batch size not stated"),
                Figure(f"inference, batch {inf.batch_size}, with inputs (collate + k-vectors)",
                       inf.batched_inputs_ms, p.inference_ms, "ms/material"),
                Figure("inference, batch 1, forward", inf.single_forward_ms, None, "ms/material"),
                Figure("inference, batch 1, with inputs", inf.single_inputs_ms, None, "ms/material"),
            ]
        if par is not None:
            single = len(par.task_config["targets"]) == 1
            rows += [
                Figure(f"parameters, this task's model ({par.task_config['blocks']} blocks, "
                       f"{len(par.task_config['targets'])} target(s), {par.task_config['head']})",
                       par.task, p.params_1_task if single else p.mt_params_5_tasks, "params", other, same_task),
                Figure(f"parameters, 1 task, Table 5 config ({par.paper_one_task_config['blocks']} blocks)",
                       par.paper_one_task, p.params_1_task, "params"),
                Figure("parameters, 5 tasks as 5 single-task models", par.five_single_task, p.params_5_tasks, "params"),
                Figure(f"parameters, 5 tasks, ReciNet-MT ({par.mt_config['blocks']} blocks, mt-moe)", par.mt,
                       p.mt_params_5_tasks, "params"),
            ]
        if tr is not None:
            rows.append(Figure(f"peak memory, training slice ({tr.memory.method})", tr.memory.delta_bytes / 2**20,
                               None, "MiB", "increase over the section's start; paper: not reported"))
        if inf is not None:
            rows.append(Figure(f"peak memory, inference batch {inf.batch_size} ({inf.memory.method})",
                               inf.memory.delta_bytes / 2**20, None, "MiB",
                               "increase over the section's start; paper: not reported"))
        return rows

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, derived figures and the comparison rows included."""
        return {
            "settings": self.settings.as_dict(),
            "device": self.device.as_dict(),
            "task": self.task_label,
            "dataset": self.dataset,
            "paper": {**PAPER_TABLE5.as_dict(), "source": "ReciNet paper, Table 5 (NVIDIA A100)"},
            "sections": {
                name: (getattr(self, name).as_dict() if getattr(self, name) is not None else None)
                for name in SECTIONS
            },
            "resumed": list(self.resumed),
            "figures": [f.as_dict() for f in self.figures()],
        }


# --------------------------------------------------------------------------- helpers


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_info(dev: torch.device) -> DeviceInfo:
    """Name and size of ``dev`` (GPU name on CUDA, CPU model from /proc/cpuinfo otherwise)."""
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    return DeviceInfo(dev.type, name, os.cpu_count() or 1, torch.get_num_threads(), torch.__version__)


def _rss() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.Process().memory_info().rss)


def _vm_hwm() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Context manager measuring a section's peak memory on ``device``; read :attr:`result`
    after the ``with`` block (see the module docstring for the methods)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.result: MemoryFigure | None = None
        self._method = ""
        self._baseline = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = int(torch.cuda.memory_allocated(self.device))
            self._method = "CUDA max_memory_allocated"
            return self
        self._baseline = _rss()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM (the peak RSS) to the current RSS
            if _vm_hwm() is None:
                raise OSError("no VmHWM")
            self._method = "peak RSS"
        except OSError:
            self._method = "RSS sampled every 5 ms"
            self._peak = self._baseline
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, _rss())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = int(torch.cuda.max_memory_allocated(self.device))
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss())
        else:
            peak = _vm_hwm() or _rss()
        self.result = MemoryFigure(self._method, self._baseline, peak)


class _Stored:
    """A stored graph with the ``arrays()`` of a GraphRecord (what ``inference.collate`` takes)."""

    def __init__(self, arrays: Any) -> None:
        self._arrays = arrays

    def arrays(self) -> Any:
        return self._arrays


def _preset(dataset: str, props: Sequence[str], fallback_key: str) -> dict[str, Any]:
    """A dataset plugin's preset; SPEC §6's values when the plugin is not installed."""
    from recinet_cli.registry import get_dataset

    try:
        return get_dataset(dataset).preset(list(props))
    except RecinetError:
        return dict(_FALLBACK_PRESETS[fallback_key])


def _build(config: Any, seed: int) -> Any:
    from recinet_cli.model.recinet import ReciNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ReciNet(config)


def _count(config: Any) -> int:
    from recinet_cli.model.export import parameter_count

    return parameter_count(_build(config, 0))


# --------------------------------------------------------------------------- sections


def measure_featurize(crystals: Sequence[Any], params: Any) -> FeaturizeFigures:
    """Build the graph of every crystal in this process (see the module docstring, 1.)."""
    from recinet_cli.errors import StructureError
    from recinet_cli.featurize.worker import featurize_crystal

    ok = failed = atoms = edges = 0
    if crystals:  # untimed: imports and first-call costs
        with contextlib.suppress(StructureError):
            featurize_crystal(crystals[0], params)
    t0 = time.perf_counter()
    for c in crystals:
        try:
            rec = featurize_crystal(c, params)
        except StructureError:
            failed += 1
            continue
        ok += 1
        atoms += len(rec.numbers)
        edges += int(rec.edge_index.shape[0])
    return FeaturizeFigures(ok, failed, atoms, edges, time.perf_counter() - t0)


def count_parameters(task_config: Any, task_names: Sequence[str], hidden: int | None) -> ParameterFigures:
    """Parameter counts of the task's, the 1-task, the Table 5 and the ReciNet-MT models."""
    from recinet_cli.model.config import ModelConfig

    width = {} if hidden is None else {"hidden": hidden}
    one = ModelConfig.from_dict({**task_config.to_dict(), "head": "scalar", "head_options": {},
                                 "targets": [task_names[0]]})
    paper_blocks = int(_preset("jarvis", ["formation_energy"], PAPER_TASK).get("blocks", 4))
    paper_one = ModelConfig(blocks=paper_blocks, head="scalar", targets=("formation_energy",), **width)
    mt_blocks = int(_preset("jarvis", list(JARVIS_MT_PROPERTIES), "jarvis-mt").get("blocks", 3))
    mt = ModelConfig(blocks=mt_blocks, head="mt-moe", targets=JARVIS_MT_PROPERTIES, **width)
    return ParameterFigures(
        task=_count(task_config), task_config=task_config.to_dict(),
        one_task=_count(one), one_task_config=one.to_dict(),
        paper_one_task=_count(paper_one), paper_one_task_config=paper_one.to_dict(),
        mt=_count(mt), mt_config=mt.to_dict(),
    )


def measure_inference(data: Any, mcfg: Any, dev: torch.device, batch_size: int, infer_n: int, single_n: int,
                      seed: int, precision: str = "auto") -> InferenceFigures:
    """Model-only ms/material at ``batch_size`` and 1 (see the module docstring, 3.)."""
    from recinet_cli.bench.predict import model_only
    from recinet_cli.store.reader import GraphStore
    from recinet_cli.train.engine import scaler

    split = next((s for s in ("test", "val", "train") if len(data.splits[s])), None)
    if split is None:
        raise RecinetError(f"{data.dataset}: no structures in any split")
    store = GraphStore(data.store_path, preload=True)
    records = [_Stored(store[int(r)]) for r in data.splits[split].rows[:infer_n]]
    net = _build(mcfg, seed)
    net.set_scaler(*scaler(data))
    net = net.to(dev).eval()
    # untimed: the first collate / k-vector preparation / forward pay one-time costs (lazy
    # imports, allocator start-up) that model_only would otherwise charge to the first batch
    from recinet_cli.inference import collate, model_inputs

    with torch.inference_mode():
        net(**model_inputs(net, collate(records[:batch_size]), dev, merge_edges=True))
    _sync(dev)
    with PeakMemory(dev) as mem:
        batched, _, _ = model_only([(net, 0)], [records], batch_size, dev, precision=precision)
    k = min(single_n, len(records))
    single, _, _ = (model_only([(net, 0)], [records], 1, dev, limit=k, precision=precision) if k
                    else (None, None, None))
    assert mem.result is not None
    return InferenceFigures(
        split=split, batch_size=batch_size, structures=batched.structures, atoms=batched.atoms,
        edges=batched.edges, kvectors=batched.kvectors, pairs=batched.pairs,
        batched_forward_ms=batched.ms_per_material, batched_inputs_ms=batched.ms_per_material_with_inputs,
        single_structures=single.structures if single else 0,
        single_forward_ms=single.ms_per_material if single else math.nan,
        single_inputs_ms=single.ms_per_material_with_inputs if single else math.nan,
        gflop_per_material=batched.flops / max(1, batched.structures) / 1e9,
        memory=mem.result,
    )


def measure_training(data: Any, cfg: Any, mcfg: Any, dev: torch.device, slice_steps: int, warmup: int, seed: int,
                     val_ms: float | None) -> TrainingFigures:
    """Time the engine's training step on a slice of the training split (module docstring, 4.)."""
    from torch.utils.data import Subset
    from torch_geometric.loader import DataLoader

    from recinet_cli.train.data import GraphTargetDataset
    from recinet_cli.train.engine import scaler, seed_everything
    from recinet_cli.train.step import make_optimizer, train_step

    bs = cfg.batch_size
    with PeakMemory(dev) as mem:
        seed_everything(cfg.seed)
        net = _build(mcfg, seed)
        net.set_scaler(*scaler(data))
        net = net.to(dev).train()
        train_ds = GraphTargetDataset(data.store_path, data.splits["train"])
        n_train = len(train_ds)
        if n_train == 0:
            raise RecinetError(f"the train split of {data.dataset} is empty")
        steps_per_epoch = math.ceil(n_train / bs)
        timed = min(slice_steps, steps_per_epoch)
        order = np.random.RandomState(seed).permutation(n_train)
        timed_idx = order[: min(n_train, timed * bs)]
        warm_idx = np.resize(np.random.RandomState(seed + 1).permutation(n_train), warmup * bs)
        opt = make_optimizer(net, cfg.lr, cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)

        def steps(indices: np.ndarray) -> tuple[list[float], float]:
            loader = DataLoader(Subset(train_ds, indices.tolist()), batch_size=bs, shuffle=False)
            seconds: list[float] = []
            loss_value = math.nan
            it = iter(loader)
            while True:
                _sync(dev)
                t0 = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    break
                batch = batch.to(dev)
                out = train_step(net, batch, mcfg, opt, sched, cfg.precision, cfg.clip_grad)
                _sync(dev)
                seconds.append(time.perf_counter() - t0)
                loss_value = float(out.loss)
            return seconds, loss_value

        if warmup:
            steps(warm_idx)
        step_seconds, final_loss = steps(timed_idx)
    assert mem.result is not None
    n_val = len(data.splits["val"])
    return TrainingFigures(
        train_structures=n_train, val_structures=n_val, batch_size=bs, steps_per_epoch=steps_per_epoch,
        warmup_steps=warmup, measured_steps=len(step_seconds), measured_structures=len(timed_idx),
        step_seconds=step_seconds, epochs=cfg.epochs, lr=cfg.lr, final_loss=final_loss,
        val_seconds_estimate=None if val_ms is None or not math.isfinite(val_ms) else n_val * val_ms / 1e3,
        memory=mem.result,
    )


# --------------------------------------------------------------------------- driver


def load_previous(path: str | os.PathLike[str], settings: SpeedSettings) -> dict[str, Any]:
    """The sections of an earlier run's JSON at ``path`` (``{}`` when there is none).

    Raises:
        RecinetError: the file is not a ``bench speed`` JSON, or was measured with other
            settings (named).
    """
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        payload = json.loads(p.read_text())
        old = payload["settings"]
        sections = payload["sections"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecinetError(f"--resume: {p} is not a `recinet bench speed` JSON ({exc})") from None
    diff = settings.differences(old)
    if diff:
        raise RecinetError(
            f"--resume: {p} was measured with other settings ({'; '.join(diff)}); "
            "rerun without --resume or choose another --json"
        )
    return {k: v for k, v in sections.items() if k in SECTIONS and v is not None}


def _atomic_write(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def run_speed_bench(
    settings: SpeedSettings,
    *,
    json_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
) -> SpeedBenchResult:
    """Run the sections of the module docstring for ``settings`` and return their figures.

    Args:
        settings: the task and the sizes of the measurements.
        json_path: written (atomically) after every section, so an interrupted run keeps
            what it measured.
        resume: keep the sections already in ``json_path`` (same settings required).
        log: progress callback (one line per stage).
    """
    from recinet_cli.model.config import ModelConfig
    from recinet_cli.model.precision import resolve_precision
    from recinet_cli.prediction.engine import pick_device
    from recinet_cli.structures.graph import GraphParams
    from recinet_cli.train.config import resolve
    from recinet_cli.train.data import prepare_data
    from recinet_cli.train.engine import model_config
    from recinet_cli.train.tasks import parse_task

    say = log or (lambda _msg: None)
    s = settings
    if s.batch_size < 1 or s.slice_steps < 1 or s.warmup < 0 or s.featurize_n < 0 or s.infer_n < 1 or s.single_n < 0:
        raise RecinetError("--batch-size, --slice and --infer-n must be >= 1 (--warmup, --featurize-n, --single-n >= 0)")
    dev = pick_device(s.device)
    task = parse_task(s.task)
    previous = load_previous(json_path, s) if resume and json_path is not None else {}
    flags: dict[str, Any] = {"data": s.data, "batch_size": s.batch_size, "blocks": s.blocks,
                             "device": "cuda" if dev.type == "cuda" else "cpu",
                             "precision": resolve_precision(s.precision, dev)}
    if s.hidden is not None:
        flags["model"] = {"hidden": s.hidden}
    cfg = resolve(s.task, task.dataset.preset(list(task.names)), {}, flags)
    result = SpeedBenchResult(settings=s, device=device_info(dev), task_label=task.label)
    result.dataset = {"name": task.dataset.name, "version": task.dataset.dataset_version,
                      "properties": list(task.names), "preset": task.dataset.preset(list(task.names)),
                      "epochs": cfg.epochs, "lr": cfg.lr, "blocks": cfg.blocks}

    def save() -> None:
        if json_path is not None:
            _atomic_write(Path(json_path), result.as_dict())

    if "featurize" in previous:
        result.featurize = FeaturizeFigures(**{f.name: previous["featurize"][f.name] for f in fields(FeaturizeFigures)})
        result.resumed.append("featurize")
    else:
        say(f"loading {task.label}")
        ds = task.dataset.load(list(task.names), data=Path(s.data) if s.data else None, fold=cfg.fold)
        crystals = list(ds.structures[: s.featurize_n])
        say(f"featurize: {len(crystals):,} structures in this process")
        result.featurize = measure_featurize(crystals, GraphParams())
        del ds, crystals
        save()

    prepared: list[Any] = []

    def data() -> Any:
        if not prepared:
            say(f"preparing the graphs and splits of {task.label}")
            prepared.append(prepare_data(task, cfg.data, cfg.fold, cfg.seed, cfg.val_fraction, cfg.test_fraction,
                                         log=say))
        return prepared[0]

    if "parameters" in previous:
        result.parameters = ParameterFigures(**{f.name: previous["parameters"][f.name]
                                                for f in fields(ParameterFigures)})
        result.resumed.append("parameters")
    else:
        say("parameters: counting")
        names = list(task.names)
        head = {"head": "scalar" if len(names) == 1 else "mt-moe", **cfg.model}
        mcfg0 = ModelConfig.from_dict({**head, "blocks": cfg.blocks, "targets": names})
        result.parameters = count_parameters(mcfg0, names, s.hidden)
        save()

    if "inference" in previous:
        result.inference = InferenceFigures.from_dict(previous["inference"])
        result.resumed.append("inference")
    else:
        d = data()
        mcfg = model_config(cfg, d)
        say(f"inference: batch {s.batch_size} and batch 1 on {dev}")
        result.inference = measure_inference(d, mcfg, dev, s.batch_size, s.infer_n, s.single_n, s.seed,
                                             s.precision)
        save()

    if "training" in previous:
        result.training = TrainingFigures.from_dict(previous["training"])
        result.resumed.append("training")
    else:
        d = data()
        mcfg = model_config(cfg, d)
        n_train = len(d.splits["train"])
        say(f"training: {s.warmup} warm-up + up to {s.slice_steps} timed steps of batch {s.batch_size} "
            f"({n_train:,} training structures) on {dev}")
        result.training = measure_training(d, cfg, mcfg, dev, s.slice_steps, s.warmup, s.seed,
                                           result.inference.batched_inputs_ms if result.inference else None)
    save()

    if "fastpath" in previous and previous["fastpath"] is not None:
        result.fastpath = FastPathFigures.from_dict(previous["fastpath"])
        result.resumed.append("fastpath")
    elif s.fastpath:
        d = data()
        mcfg = model_config(cfg, d)
        say(f"fast path vs the previous formulation: one epoch each of {len(d.splits['train']):,} structures on {dev}")
        result.fastpath = measure_fastpath(d, cfg, mcfg, dev, s.seed, single_n=s.single_n)
    save()
    return result
