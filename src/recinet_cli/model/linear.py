"""Linear layers whose row count is rounded up to a few sizes ("buckets") on CPU in bf16.

Why: a ragged graph batch has a new number of atoms N and edges E at every step. On CPU,
PyTorch runs bf16 matrix products through oneDNN, which compiles and caches a kernel per
shape (primitive cache, 1,024 entries by default). Every new ``[E, d] @ [d, d']`` shape then
costs a kernel compilation (measured here: +57 % on a 15,000 x 256 x 256 product) and a few
MB of cached kernel state that is never freed until the cache is full: training memory grew
by about 50 MB per epoch. Padding the rows of the input with zeros to the next bucket
(:func:`bucket_rows`: 8 sizes per octave, so at most 12.5 % extra rows) bounds the number of
shapes a run ever sees, so the kernels are reused and memory stays flat. The padded rows are
sliced off the output; their gradient is zero, so results are unchanged.

Padding applies only in eager mode, on CPU, when the product runs in bf16 (bf16 input or CPU
autocast to bf16). fp32 products (no per-shape kernels), CUDA, TorchScript, ``torch.export``
and ``torch.compile`` see a plain :func:`torch.nn.functional.linear`.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Buckets per doubling of the row count (at most ``1 / BUCKETS_PER_OCTAVE`` padding).
BUCKETS_PER_OCTAVE = 8
#: Row counts up to this are padded to exactly this (tiny products: padding is free).
MIN_BUCKET = 64


def bucket_rows(n: int, per_octave: int = BUCKETS_PER_OCTAVE, minimum: int = MIN_BUCKET) -> int:
    """Smallest bucket >= ``n``: a multiple of ``2^(floor(log2 n)) / per_octave``.

    >>> [bucket_rows(n) for n in (1, 64, 65, 1000, 1025, 15010)]
    [64, 64, 72, 1024, 1152, 15360]
    """
    if n <= minimum:
        return minimum
    step = max(1, (1 << (n.bit_length() - 1)) // per_octave)
    return -(-n // step) * step


@torch.jit.unused
def _runs_in_bf16_on_cpu(x: Tensor) -> bool:
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    if x.dtype == torch.bfloat16:
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


@torch.jit.unused
def _padded_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:  # noqa: UP045 (TorchScript)
    n = x.shape[0]
    m = bucket_rows(n)
    if m == n:
        return F.linear(x, weight, bias)
    return F.linear(F.pad(x, (0, 0, 0, m - n)), weight, bias)[:n]


def bucketed_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:  # noqa: UP045 (TorchScript)
    """``F.linear(x, weight, bias)`` for ``x [M, d_in]``, with M padded to :func:`bucket_rows`
    when the product runs in bf16 on CPU (see the module docstring). ``-> [M, d_out]``."""
    if torch.jit.is_scripting() or x.dim() != 2 or not _runs_in_bf16_on_cpu(x):
        return F.linear(x, weight, bias)
    return _padded_linear(x, weight, bias)


class BucketedLinear(nn.Linear):
    """:class:`torch.nn.Linear` (same parameters and state-dict keys) through
    :func:`bucketed_linear`. Shapes: ``[M, in] -> [M, out]``."""

    def forward(self, x: Tensor) -> Tensor:
        return bucketed_linear(x, self.weight, self.bias)
