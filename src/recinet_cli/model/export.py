"""TorchScript and ``torch.export`` of a :class:`~recinet_cli.model.recinet.ReciNet`.

Both take the network *core*: plain tensors in (:data:`~recinet_cli.model.recinet.INPUT_NAMES`,
as :func:`~recinet_cli.model.recinet.prepare_inputs` makes them), properties in physical
units out. The k-vector preparation stays outside, in eager PyTorch.

Sizes (all dynamic in an exported program): N atoms, E edges, B crystals, K k-vectors,
P (atom, k) pairs. The inputs are ``atomic_numbers [N]``, ``edge_index [2, E]``,
``edge_len [E]``, ``node_graph [N]``, ``inv_natoms [B]``, ``frac [N, 3]``, ``k_int [K, 3]``,
``k_norm [K]``, ``k_slot [K]``, ``pair_atom [P]``, ``pair_k [P]``; the output is ``[B, T]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from recinet_cli.errors import RecinetError
from recinet_cli.model.recinet import INPUT_NAMES

__all__ = ["dynamic_shapes", "export_model", "parameter_count", "parity", "script_model"]

#: Which dimension of which input carries which dynamic size (inputs of the same size share it).
_DYNAMIC_DIMS: dict[str, tuple[int, str]] = {
    "atomic_numbers": (0, "N"),
    "edge_index": (1, "E"),
    "edge_len": (0, "E"),
    "node_graph": (0, "N"),
    "inv_natoms": (0, "B"),
    "frac": (0, "N"),
    "k_int": (0, "K"),
    "k_norm": (0, "K"),
    "k_slot": (0, "K"),
    "pair_atom": (0, "P"),
    "pair_k": (0, "P"),
}


def _require_eval(model: nn.Module) -> None:
    if model.training:
        raise RecinetError("export: the model must be in eval mode (call model.eval() first)")


def script_model(model: nn.Module) -> torch.jit.ScriptModule:
    """TorchScript the model (in eval mode); the scripted ``forward`` takes the tensors of
    :data:`INPUT_NAMES` positionally and returns ``[B, T]``. Save it with ``torch.jit.save``."""
    _require_eval(model)
    return torch.jit.script(model)


def _size_oblivious() -> tuple[contextlib.AbstractContextManager[Any], bool]:
    """(context, available): tracing in which sizes 0 and 1 of the example are not special,
    where this torch has it (``torch.fx.experimental._config.backed_size_oblivious``)."""
    try:
        from torch.fx.experimental import _config as fx_config
    except ImportError:  # pragma: no cover - very old torch
        return contextlib.nullcontext(), False
    if "backed_size_oblivious" not in fx_config.get_config_copy():  # pragma: no cover
        return contextlib.nullcontext(), False
    return fx_config.patch(backed_size_oblivious=True), True


def dynamic_shapes(
    example_inputs: Mapping[str, Tensor], oblivious: bool = True
) -> dict[str, dict[int, Any]]:
    """The ``dynamic_shapes`` argument of ``torch.export.export`` for ReciNet's inputs.

    One ``torch.export.Dim`` (min 0) per size N, E, B, K, P, shared by the inputs that have
    that size. Without size-oblivious tracing (``oblivious=False``) an example size of 0 or 1
    would be specialised by torch, so such a size is left static instead.
    """
    dims = {name: torch.export.Dim(name, min=0) for name in ("N", "E", "B", "K", "P")}
    shapes: dict[str, dict[int, Any]] = {}
    for name in INPUT_NAMES:
        axis, size = _DYNAMIC_DIMS[name]
        if oblivious or example_inputs[name].shape[axis] >= 2:
            shapes[name] = {axis: dims[size]}
        else:
            shapes[name] = {}
    return shapes


def export_model(
    model: nn.Module, example_inputs: Mapping[str, Tensor]
) -> torch.export.ExportedProgram:
    """``torch.export`` the model (in eval mode) with dynamic N, E, B, K and P.

    Args:
        model: a :class:`~recinet_cli.model.recinet.ReciNet` in eval mode.
        example_inputs: one batch as :func:`~recinet_cli.model.recinet.prepare_inputs` gives it.

    Returns:
        An ``ExportedProgram`` whose ``module()`` takes the :data:`INPUT_NAMES` tensors
        positionally (any batch size, including one crystal and batches without k-vectors)
        and returns ``[B, T]``. Save it with ``torch.export.save`` (``.pt2``).

    Tracing is size-oblivious where torch offers it (``torch.fx.experimental._config.
    backed_size_oblivious``): without it, torch specialises every size that is 0 or 1 in the
    example, so e.g. a model without the reciprocal stream (K = P = 0) or a one-crystal
    example would export with static sizes.
    """
    _require_eval(model)
    args = tuple(example_inputs[name] for name in INPUT_NAMES)
    context, oblivious = _size_oblivious()
    with context:
        return torch.export.export(
            model, args=args, dynamic_shapes=dynamic_shapes(example_inputs, oblivious)
        )


@contextlib.contextmanager
def _eval_no_grad(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad; mode and buffers (e.g. MoE expert counts) restored after."""
    was_training = model.training
    saved = {name: buf.clone() for name, buf in model.named_buffers()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(saved[name])


def parity(
    model: nn.Module, exported: Callable[..., Tensor], inputs: Mapping[str, Tensor]
) -> float:
    """Max absolute difference between the eager model (eval mode) and ``exported`` (a
    scripted module, ``ExportedProgram.module()`` or any callable taking the
    :data:`INPUT_NAMES` tensors positionally) on one batch of ``inputs``."""
    args = tuple(inputs[name] for name in INPUT_NAMES)
    with _eval_no_grad(model):
        expected = model(*args)
        got = exported(*args)
    if got.shape != expected.shape:
        raise RecinetError(
            f"parity: output shape {tuple(got.shape)} != eager {tuple(expected.shape)}"
        )
    return float((got - expected).abs().max()) if expected.numel() else 0.0


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters (each shared tensor counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
