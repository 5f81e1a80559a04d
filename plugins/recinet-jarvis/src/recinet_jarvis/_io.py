"""Reading JARVIS JSON files: plain, gzipped or zipped; dft_3d/dft_2d dicts or OPTIMADE form."""

from __future__ import annotations

import gzip
import json
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recinet_cli.errors import PluginError, StructureError

__all__ = ["MISSING_SENTINEL", "entry_id", "entry_value", "read_entries", "to_crystal"]

#: The OPTIMADE export of JARVIS writes missing values as this number.
MISSING_SENTINEL = -99999.0

Entry = Mapping[str, Any]


def read_entries(path: Path, member: str | None = None) -> list[Entry]:
    """The list of entry dicts in a ``.json``, ``.json.gz`` or ``.zip`` file.

    Args:
        path: The file. A zip must hold ``member`` or exactly one ``.json`` file.
        member: Preferred member name inside a zip (e.g. ``jdft_3d-8-18-2021.json``).

    Raises:
        PluginError: unreadable file or not a JSON list of objects (nor ``{"data": [...]}``).
    """
    try:
        doc = _load_json(path, member)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise PluginError(f"{path}: cannot read JSON ({type(exc).__name__}: {exc})") from exc
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc = doc["data"]  # an OPTIMADE response
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


def _attributes(entry: Entry) -> Mapping[str, Any]:
    attrs = entry.get("attributes")
    return attrs if isinstance(attrs, Mapping) else {}


def entry_value(entry: Entry, key: str) -> float:
    """Value of ``key`` as a float; ``NaN`` when missing (absent, ``None``, ``"na"``, -99999).

    Looked up at the top level, then under ``attributes`` as ``key`` and ``_jarvis_KEY``.
    Numeric strings are parsed.
    """
    raw: Any = None
    if key in entry:
        raw = entry[key]
    else:
        attrs = _attributes(entry)
        raw = attrs.get(key, attrs.get(f"_jarvis_{key}"))
    return parse_value(raw)


def parse_value(raw: Any) -> float:
    """A float, or ``NaN`` for anything that is not a usable number."""
    if raw is None or isinstance(raw, bool):
        return math.nan
    if isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError:
            return math.nan
    if not isinstance(raw, (int, float)):
        return math.nan
    value = float(raw)
    if value == MISSING_SENTINEL:
        return math.nan
    return value


def entry_id(entry: Entry) -> str | None:
    """The JARVIS id (``JVASP-...``): ``jid``, ``attributes._jarvis_jid`` or ``JVASP-<id>``."""
    jid = entry.get("jid") or _attributes(entry).get("_jarvis_jid")
    if jid:
        return str(jid)
    raw = entry.get("id")
    if raw is None:
        return None
    raw = str(raw)
    return f"JVASP-{raw}" if raw.isdigit() else raw


def to_crystal(entry: Entry, sid: str, source: str) -> Any:
    """A :class:`~recinet_cli.structures.crystal.Crystal` from ``atoms`` or OPTIMADE attributes.

    Raises:
        StructureError: no usable structure, or the converter / validation rejects it.
    """
    from recinet_cli.structures.crystal import validate_crystal
    from recinet_cli.structures.readers import from_jarvis_atoms

    atoms = entry.get("atoms")
    if not isinstance(atoms, Mapping):
        atoms = _optimade_atoms(_attributes(entry))
    crystal = from_jarvis_atoms(dict(atoms), sid, source)
    validate_crystal(crystal)
    return crystal


def _optimade_atoms(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A JARVIS atoms dict (Cartesian, Å) from OPTIMADE structure attributes."""
    try:
        lattice = attrs["lattice_vectors"]
        positions = attrs["cartesian_site_positions"]
        names = list(attrs["species_at_sites"])
    except KeyError as exc:
        raise StructureError(f"no 'atoms' and no OPTIMADE attribute {exc.args[0]!r}") from None
    symbols: dict[str, str] = {}
    for sp in attrs.get("species") or []:
        chem = sp.get("chemical_symbols") or []
        if sp.get("name") and len(chem) == 1:
            symbols[str(sp["name"])] = str(chem[0])
    elements = [symbols.get(str(n), str(n)) for n in names]
    return {"lattice_mat": lattice, "coords": positions, "elements": elements, "cartesian": True}
