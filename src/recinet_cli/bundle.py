"""Model bundles: one ``.safetensors`` file holding the weights and a self-description.

A bundle is data, never code: tensors in the safetensors format plus one JSON string in its
metadata (key ``recinet``) with the model config, featurizer parameters and hash, targets
with units, scaler, dataset name/version/split, metrics, the training config and the recinet
version. A SHA-256 over the tensor payload (metadata key ``weights_sha256``) detects edits
and truncation; nothing is ever unpickled. The scaler is also in the weights
(``target_mean``/``target_std`` buffers), so the network alone predicts physical units.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from recinet_cli.errors import RecinetError

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "BundleError", "load_bundle", "read_bundle_info", "save_bundle"]

BUNDLE_FORMAT = "recinet-bundle"
BUNDLE_VERSION = 1


class BundleError(RecinetError):
    """A file is not a valid (or not an intact) recinet model bundle."""


def _weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(key.encode() + b"\0" + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_bundle(path: str | os.PathLike[str], model: torch.nn.Module, info: dict[str, Any]) -> Path:
    """Write ``model``'s state and ``info`` (JSON-serialisable) atomically to ``path``."""
    from safetensors.torch import save_file

    from recinet_cli import __version__

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    info = {**info, "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "recinet_version": __version__}
    meta = {"format": BUNDLE_FORMAT, "recinet": json.dumps(info, sort_keys=True), "weights_sha256": _weights_sha256(tensors)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    if not path.is_file():
        raise BundleError(f"{path}: no such model bundle")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # SafetensorError: bad header, truncated file, not safetensors
        raise BundleError(f"{path}: not a recinet model bundle ({one_line(exc)})") from exc
    if meta.get("format") != BUNDLE_FORMAT or "recinet" not in meta:
        raise BundleError(f"{path}: a safetensors file, but not a recinet model bundle")
    return meta


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_bundle_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The bundle's description (cheap: reads the header only)."""
    meta = _metadata(Path(path))
    try:
        info = json.loads(meta["recinet"])
    except ValueError as exc:
        raise BundleError(f"{path}: corrupted bundle description ({exc})") from exc
    if not isinstance(info, dict):
        raise BundleError(f"{path}: corrupted bundle description (not a JSON object)")
    if not isinstance(info.get("format_version", 0), int):
        raise BundleError(f"{path}: corrupted bundle description (format_version {info.get('format_version')!r})")
    if info.get("format_version", 0) > BUNDLE_VERSION:
        raise BundleError(
            f"{path}: bundle format {info.get('format_version')} is newer than this recinet reads "
            f"({BUNDLE_VERSION}); upgrade recinet"
        )
    return info


def load_bundle(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """``(ReciNet in eval mode, info)``; verifies the weights' checksum first.

    Raises:
        BundleError: not a bundle, truncated, tampered with, or weights not matching the config.
    """
    from safetensors.torch import load_file

    from recinet_cli.model.config import ModelConfig
    from recinet_cli.model.recinet import ReciNet

    path = Path(path)
    meta = _metadata(path)
    info = read_bundle_info(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise BundleError(f"{path}: cannot read the weights ({one_line(exc)})") from exc
    if _weights_sha256(tensors) != meta.get("weights_sha256"):
        raise BundleError(f"{path}: weights checksum mismatch (the file was modified or damaged)")
    try:
        config = ModelConfig.from_dict(info["model_config"])
    except (KeyError, TypeError, ValueError, RecinetError) as exc:
        raise BundleError(f"{path}: the bundle description has no valid model config ({one_line(exc)})") from exc
    model = ReciNet(config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{path}: weights do not fit the stored model config ({one_line(exc)})") from exc
    return model.to(device).eval(), info
