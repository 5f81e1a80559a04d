"""Arithmetic precision chosen for the hardware: ``auto``, ``fp32`` or ``bf16``.

``auto`` (the default of ``train``, ``predict`` and ``bench``) resolves to ``bf16`` autocast
where the hardware multiplies bf16 matrices natively and fast: CUDA devices that support
bf16, and CPUs with AMX-BF16 or AVX512-BF16 (oneDNN's bf16 kernels; about 3x the fp32 rate
on an AVX512-BF16 CPU, about 5-10x with AMX). Everywhere else it is ``fp32``. ``fp32`` and
``bf16`` force a precision.

Under bf16 autocast only the matrix products run in bf16: the reciprocal block's phases and
sums over atoms and k-vectors, BatchNorm statistics, the message sums over edges, the node
(atom) stream and the loss stay in float32 (see :mod:`recinet_cli.model.reciprocal`,
:mod:`recinet_cli.model.local_conv`). Weights are always stored in float32.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Literal

from recinet_cli.errors import RecinetError

if TYPE_CHECKING:  # torch is imported lazily: the training config imports this module
    import torch

Precision = Literal["auto", "fp32", "bf16"]
#: The precisions a run can actually use (what ``auto`` resolves to).
Resolved = Literal["fp32", "bf16"]
PRECISIONS = ("auto", "fp32", "bf16")

#: CPU flags (``/proc/cpuinfo``) of native bf16 matrix arithmetic.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The :data:`BF16_CPU_FLAGS` this CPU reports (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return tuple(f for f in BF16_CPU_FLAGS if f in flags)
    except OSError:
        pass
    return ()


def fast_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bf16 matrices natively (see the module docstring)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if dev.type == "cpu":
        return bool(cpu_bf16_flags()) and torch.backends.mkldnn.is_available()
    return False


def check_precision(value: str) -> None:
    """Raise a one-line error unless ``value`` is one of :data:`PRECISIONS`."""
    if value not in PRECISIONS:
        raise RecinetError(f"precision must be auto, fp32 or bf16, got {value!r}")


def resolve_precision(requested: str, device: torch.device | str) -> Resolved:
    """``auto`` -> ``bf16`` on hardware with fast bf16, else ``fp32``; ``fp32``/``bf16`` as given."""
    check_precision(requested)
    if requested == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return "bf16" if requested == "bf16" else "fp32"


def describe(requested: str, resolved: str, device: torch.device | str) -> str:
    """One line for logs: ``precision bf16 (auto: CPU with avx512_bf16)``."""
    import torch

    dev = torch.device(device)
    if requested != "auto":
        return f"precision {resolved} (forced)"
    if dev.type == "cpu":
        why = f"CPU with {', '.join(cpu_bf16_flags())}" if resolved == "bf16" else "CPU without AMX/AVX512-BF16"
    else:
        why = f"{dev.type} {'with' if resolved == 'bf16' else 'without'} bf16"
    return f"precision {resolved} (auto: {why})"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on ``device`` for a resolved ``bf16``; a no-op context for ``fp32``."""
    import torch

    dev = torch.device(device)
    if precision == "auto":
        precision = resolve_precision(precision, dev)
    if precision == "bf16":
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
