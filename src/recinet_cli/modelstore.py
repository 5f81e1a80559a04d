"""The model store: finished training runs registered by name.

Layout: ``models_dir()/NAME/model.safetensors`` (see :mod:`recinet_cli.paths` for the
location and the ``RECINET_MODELS_DIR`` / ``RECINET_HOME`` overrides). Entries are added by
copying into a temporary directory and renaming it, so a listed model is always complete.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recinet_cli.bundle import BundleError, read_bundle_info
from recinet_cli.errors import RecinetError
from recinet_cli.paths import models_dir

__all__ = ["ModelEntry", "StoreError", "list_models", "register", "remove", "resolve"]

BUNDLE_NAME = "model.safetensors"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class StoreError(RecinetError):
    """A model-store operation failed (unknown name, name taken, bad name)."""


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its name, bundle path and description (or the error reading it)."""

    name: str
    path: Path
    info: dict[str, Any] | None
    error: str | None = None


def check_name(name: str) -> str:
    # fullmatch: ``$`` alone would accept a trailing newline; ``.tmp-`` marks the store's own
    # temporary directories, which list_models() hides.
    if not _NAME.fullmatch(name) or ".tmp-" in name:
        raise StoreError(f"model name {name!r}: use letters, digits and . _ + - (not starting with a symbol)")
    return name


def _entry(directory: Path) -> ModelEntry:
    path = directory / BUNDLE_NAME
    try:
        return ModelEntry(directory.name, path, read_bundle_info(path))
    except BundleError as exc:
        return ModelEntry(directory.name, path, None, str(exc))


def list_models() -> list[ModelEntry]:
    """All registered models, sorted by name (unreadable ones carry their error)."""
    root = models_dir()
    if not root.is_dir():
        return []
    return [_entry(d) for d in sorted(root.iterdir()) if d.is_dir() and ".tmp-" not in d.name]


def get(name: str) -> ModelEntry:
    """The entry called ``name``.

    Raises:
        StoreError: no such model (the message lists the registered names).
    """
    directory = models_dir() / check_name(name)
    if not directory.is_dir():  # a listed entry whose bundle is unreadable or gone is still an entry
        names = [e.name for e in list_models()]
        listed = ", ".join(names) if names else "none (train one with `recinet train`)"
        raise StoreError(f"no model {name!r} in the store {models_dir()}; registered: {listed}")
    return _entry(directory)


def resolve(name_or_path: str) -> Path:
    """Bundle path for a store name, a bundle file, or a run/store directory holding one."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    if p.is_dir() and (p / BUNDLE_NAME).is_file():
        return p / BUNDLE_NAME
    return get(name_or_path).path


def free_name(base: str) -> str:
    """``base`` if unused, else ``base-2``, ``base-3``, ..."""
    root = models_dir()
    name, k = check_name(base), 1
    while (root / name).exists():
        k += 1
        name = f"{base}-{k}"
    return name


def register(bundle: Path, name: str, overwrite: bool = False) -> ModelEntry:
    """Copy ``bundle`` into the store as ``name``.

    Raises:
        StoreError: ``name`` is taken (and ``overwrite`` is false) or invalid.
        BundleError: ``bundle`` is not a valid bundle.
    """
    read_bundle_info(bundle)
    root = models_dir()
    target = root / check_name(name)
    if target.exists() and not overwrite:
        raise StoreError(f"a model named {name!r} already exists in {root}; choose another --name or remove it")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copy2(bundle, tmp / BUNDLE_NAME)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return _entry(target)


def remove(name: str) -> Path:
    """Delete the model ``name``; returns the removed directory."""
    entry = get(name)
    shutil.rmtree(entry.path.parent)
    return entry.path.parent
