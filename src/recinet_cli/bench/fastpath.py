"""Benchmark: the previous formulation in fp32 against the default fast path, side by side.

Both run in one process on the same batches of the task's training split (one seeded order,
collated once) from the same initial weights, through the one training step
(:func:`recinet_cli.train.step.train_step`):

* **reference**: the formulation recinet trained with before the fast path, kept here as
  the yardstick: the local conv's first layer on the ``[h_i || h_j || v_ij]`` concatenation
  (:meth:`~recinet_cli.model.local_conv.PotNetConv.forward_concat`), the full multigraph
  (no merged edges), fp32;
* **fast** (the default of ``recinet train``): the factorised conv, duplicate edges merged
  with their multiplicity, precision ``auto`` (bf16 autocast where the hardware has fast
  bf16) with bf16 row buckets.

Figures per formulation: seconds for one whole epoch (every training batch, then the
validation pass, exactly what the engine runs per epoch), inference ms/material in eval
mode at the batch size and at batch 1 (``prepare_inputs`` included, the edge merging is part
of it), and the peak RSS increase of the epoch. For the fast path also the *useful* FLOPs
of an epoch (matrix products of the factorised form on the merged edges, counted with
``FlopCounterMode`` in fp32 so no padding is counted) and their rate as a fraction of the
best matrix-multiply rate measured in the same run (fp32 and, where the hardware has it,
bf16, on the shape of the conv's edge product).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from recinet_cli.bench.model import MatmulProbe, _sync, count_flops

__all__ = ["FastPathFigures", "PathFigures", "measure_fastpath", "reference_formulation"]


@dataclass(frozen=True)
class PathFigures:
    """One formulation's figures (seconds, ms/material, bytes)."""

    label: str
    precision: str
    epoch_seconds: float
    train_seconds: float
    val_seconds: float
    steps: int
    infer_batch_ms: float
    infer_single_ms: float
    peak_rss_delta: int
    edges_per_epoch: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FastPathFigures:
    """Reference vs fast path, measured in one run (see the module docstring)."""

    reference: PathFigures
    fast: PathFigures
    train_structures: int
    val_structures: int
    batch_size: int
    useful_flops_per_epoch: float
    matmul_fp32: float
    matmul_bf16: float | None
    matmul_shape: tuple[int, int, int]

    @property
    def speedup(self) -> float:
        return self.reference.epoch_seconds / self.fast.epoch_seconds

    @property
    def best_matmul(self) -> float:
        return max(self.matmul_fp32, self.matmul_bf16 or 0.0)

    @property
    def useful_rate(self) -> float:
        """Useful FLOP/s of the fast path's training steps (validation excluded)."""
        return self.useful_flops_per_epoch / self.fast.train_seconds

    @property
    def utilisation(self) -> float:
        return self.useful_rate / self.best_matmul

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(figure, reference, fast, ratio) rows for display."""
        r, f = self.reference, self.fast

        def ms(v: float) -> str:
            return f"{v:.2f} ms" if math.isfinite(v) else "—"

        return [
            ("precision", r.precision, f.precision, ""),
            (f"s/epoch ({self.train_structures} train + {self.val_structures} val structures)",
             f"{r.epoch_seconds:.2f} s", f"{f.epoch_seconds:.2f} s", f"{self.speedup:.2f}x faster"),
            ("  of which training steps", f"{r.train_seconds:.2f} s", f"{f.train_seconds:.2f} s",
             f"{r.train_seconds / f.train_seconds:.2f}x"),
            ("edges through the local layers per epoch", f"{r.edges_per_epoch:,}", f"{f.edges_per_epoch:,}",
             f"{f.edges_per_epoch / r.edges_per_epoch:.0%}"),
            (f"inference, batch {self.batch_size}", ms(r.infer_batch_ms), ms(f.infer_batch_ms),
             f"{r.infer_batch_ms / f.infer_batch_ms:.2f}x"),
            ("inference, batch 1", ms(r.infer_single_ms), ms(f.infer_single_ms),
             f"{r.infer_single_ms / f.infer_single_ms:.2f}x" if math.isfinite(f.infer_single_ms) else ""),
            ("peak memory increase, one epoch", f"{r.peak_rss_delta / 2**20:,.0f} MiB",
             f"{f.peak_rss_delta / 2**20:,.0f} MiB", ""),
            ("useful FLOP/s of the training steps (factorised form)", "",
             f"{self.useful_rate / 1e9:,.0f} GFLOP/s", ""),
            (f"best matmul {self.matmul_shape}: fp32 / bf16", "",
             f"{self.matmul_fp32 / 1e9:,.0f} / "
             f"{(self.matmul_bf16 or math.nan) / 1e9:,.0f} GFLOP/s", ""),
            ("useful rate / best matmul rate", "", f"{self.utilisation:.0%}", ""),
        ]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["matmul_shape"] = list(self.matmul_shape)
        d.update(speedup=self.speedup, useful_rate=self.useful_rate, best_matmul=self.best_matmul,
                 utilisation=self.utilisation)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FastPathFigures:
        keep = {k: d[k] for k in ("train_structures", "val_structures", "batch_size", "useful_flops_per_epoch",
                                  "matmul_fp32", "matmul_bf16")}
        return cls(reference=PathFigures(**d["reference"]), fast=PathFigures(**d["fast"]),
                   matmul_shape=tuple(d["matmul_shape"]), **keep)


@contextlib.contextmanager
def reference_formulation(net: torch.nn.Module) -> Iterator[None]:
    """Run every local conv of ``net`` in the concatenated form (the previous formulation)."""
    from recinet_cli.model.local_conv import PotNetConv

    convs = [m for m in net.modules() if isinstance(m, PotNetConv)]
    for conv in convs:
        conv.forward = conv.forward_concat  # type: ignore[method-assign]
    try:
        yield
    finally:
        for conv in convs:
            del conv.forward


def _edges(batches: list[Any], merge: bool) -> int:
    """Edges the local layers process over ``batches`` (after merging duplicates if ``merge``)."""
    from recinet_cli.model.edges import merge_duplicate_edges

    if not merge:
        return sum(int(b.edge_index.shape[1]) for b in batches)
    return sum(int(merge_duplicate_edges(b.edge_index, torch.linalg.norm(b.edge_vec, dim=1), b.num_nodes)[0].shape[1])
               for b in batches)


def _infer_ms(net: Any, config: Any, batches: list[Any], precision: str, merge: bool, dev: torch.device) -> float:
    from recinet_cli.model.precision import autocast
    from recinet_cli.model.recinet import prepare_inputs

    if not batches:
        return math.nan
    net.eval()
    with torch.inference_mode():
        with autocast(precision, dev):  # untimed first pass
            net(**prepare_inputs(batches[0], config, merge_edges=merge))
        _sync(dev)
        t0 = time.perf_counter()
        for b in batches:
            with autocast(precision, dev):
                net(**prepare_inputs(b, config, merge_edges=merge))
        _sync(dev)
    return (time.perf_counter() - t0) * 1e3 / sum(int(b.num_graphs) for b in batches)


def measure_fastpath(data: Any, cfg: Any, config: Any, dev: torch.device, seed: int, single_n: int = 64,
                     matmul_rounds: int = 5) -> FastPathFigures:
    """Measure both formulations (module docstring) on ``data`` (a prepared task) with the
    run settings ``cfg`` and model config ``config``."""
    from torch_geometric.loader import DataLoader

    from recinet_cli.bench.speed import PeakMemory
    from recinet_cli.model.linear import bucket_rows
    from recinet_cli.model.precision import fast_bf16, resolve_precision
    from recinet_cli.model.recinet import ReciNet
    from recinet_cli.train.data import GraphTargetDataset
    from recinet_cli.train.engine import scaler
    from recinet_cli.train.step import forward_standardized, make_optimizer, train_step

    bs = cfg.batch_size
    train_ds = GraphTargetDataset(data.store_path, data.splits["train"])
    order = np.random.RandomState(seed).permutation(len(train_ds)).tolist()
    train = [b.to(dev) for b in DataLoader(torch.utils.data.Subset(train_ds, order), batch_size=bs)]
    val = [b.to(dev) for b in DataLoader(GraphTargetDataset(data.store_path, data.splits["val"]), batch_size=bs)]
    split = "test" if len(data.splits["test"]) else "val"
    test_ds = GraphTargetDataset(data.store_path, data.splits[split])
    infer = [b.to(dev) for b in DataLoader(test_ds, batch_size=bs)]
    single = [b.to(dev) for b in DataLoader(torch.utils.data.Subset(test_ds, range(min(single_n, len(test_ds)))),
                                            batch_size=1)]
    fast_precision = resolve_precision("auto", dev)

    def run(label: str, precision: str, merge: bool) -> PathFigures:
        torch.manual_seed(seed)
        net = ReciNet(config)
        net.set_scaler(*scaler(data))
        net.to(dev)
        opt = make_optimizer(net, cfg.lr, cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(2, 2 * len(train)))
        ctx = reference_formulation(net) if label == "reference" else contextlib.nullcontext()
        with ctx:
            net.train()
            train_step(net, train[0], config, opt, sched, precision, merge_edges=merge)  # warm-up, untimed
            with PeakMemory(dev) as mem:
                _sync(dev)
                t0 = time.perf_counter()
                net.train()
                for b in train:
                    train_step(net, b, config, opt, sched, precision, merge_edges=merge)
                _sync(dev)
                t1 = time.perf_counter()
                net.eval()
                with torch.no_grad():
                    for b in val:
                        forward_standardized(net, b, config, precision, merge)
                _sync(dev)
                t2 = time.perf_counter()
            assert mem.result is not None
            batch_ms = _infer_ms(net, config, infer, precision, merge, dev)
            single_ms = _infer_ms(net, config, single, precision, merge, dev)
        return PathFigures(label, precision, t2 - t0, t1 - t0, t2 - t1, len(train), batch_ms, single_ms,
                           mem.result.delta_bytes, _edges(train, merge))

    reference = run("reference", "fp32", merge=False)
    fast = run("fast", fast_precision, merge=True)

    torch.manual_seed(seed)
    net = ReciNet(config)
    net.set_scaler(*scaler(data))
    net.to(dev).train()
    flops = 0.0
    for b in train:
        def step(b: Any = b) -> None:
            out = forward_standardized(net, b, config, "fp32", True)
            out.square().mean().backward()

        flops += count_flops(step)[0]
    mean_edges = fast.edges_per_epoch / max(1, len(train))
    shape = (bucket_rows(int(mean_edges)), config.hidden, 2 * config.hidden)
    fp32 = max(MatmulProbe(*shape, dev, torch.float32).rates(matmul_rounds))
    bf16 = max(MatmulProbe(*shape, dev, torch.bfloat16).rates(matmul_rounds)) if fast_bf16(dev) else None
    return FastPathFigures(reference, fast, len(train_ds), sum(int(b.num_graphs) for b in val), bs, flops,
                           fp32, bf16, shape)
