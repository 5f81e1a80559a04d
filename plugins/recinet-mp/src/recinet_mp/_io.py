"""Reading the MP-2018.6.1 ``megnet.json`` (plain, gzipped or zipped) and its entries."""

from __future__ import annotations

import gzip
import json
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recinet_cli.errors import PluginError, StructureError

__all__ = ["entry_id", "parse_value", "read_entries", "to_crystal"]

Entry = Mapping[str, Any]


def read_entries(path: Path, member: str | None = None) -> list[Entry]:
    """The list of entry dicts in a ``.json``, ``.json.gz`` or ``.zip`` file.

    Args:
        path: The file. A zip must hold ``member`` or exactly one ``.json`` file.
        member: Preferred member name inside a zip (``megnet.json``).

    Raises:
        PluginError: unreadable file, or not a JSON list of objects.
    """
    try:
        doc = _load_json(path, member)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise PluginError(f"{path}: cannot read JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise PluginError(f"{path}: expected a JSON list of entries (objects)")
    return doc


def _load_json(path: Path, member: str | None) -> Any:
    """Parse the JSON document in ``path`` (plain, gzip or zip, by content)."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as fh:
            return json.load(fh)
    if magic == b"PK\x03\x04":
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read(_zip_member(zf, member, path)))
    with open(path, "rb") as fh:
        return json.load(fh)


def _zip_member(zf: zipfile.ZipFile, member: str | None, path: Path) -> str:
    """The zip member to read: ``member`` if present, else the only ``.json`` file."""
    names = [n for n in zf.namelist() if not n.endswith("/")]
    if member is not None and member in names:
        return member
    jsons = [n for n in names if n.endswith(".json") and not n.split("/")[-1].startswith(".")]
    if len(jsons) != 1:
        raise ValueError(f"expected one .json member in {path.name}, found {jsons or names}")
    return jsons[0]


def parse_value(raw: Any) -> float:
    """A float, or ``NaN`` when missing (``None``, ``"na"``, non-numeric, NaN)."""
    if raw is None or isinstance(raw, bool):
        return math.nan
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            return math.nan
    if isinstance(raw, (int, float)):
        return float(raw)
    return math.nan


def entry_id(entry: Entry) -> str | None:
    """The Materials Project id: ``id`` (megnet.json), else ``material_id`` or ``mp_id``."""
    for key in ("id", "material_id", "mp_id"):
        if entry.get(key):
            return str(entry[key])
    return None


def to_crystal(entry: Entry, sid: str, source: str) -> Any:
    """A :class:`~recinet_cli.structures.crystal.Crystal` from the entry's JARVIS ``atoms``.

    Raises:
        StructureError: no ``atoms`` dict, or the converter / validation rejects it.
    """
    from recinet_cli.structures.crystal import validate_crystal
    from recinet_cli.structures.readers import from_jarvis_atoms

    atoms = entry.get("atoms")
    if not isinstance(atoms, Mapping):
        raise StructureError("entry has no 'atoms' structure dict")
    crystal = from_jarvis_atoms(dict(atoms), sid, source)
    validate_crystal(crystal)
    return crystal
