"""JARVIS entries (dft_3d/dft_2d dicts or OPTIMADE form): ids, labels and structures.

Reading the file itself (plain, gzipped or zipped JSON) is
:func:`recinet_cli.datasets.common.read_json_entries`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recinet_cli.datasets.common import Entry, atoms_to_crystal, parse_float
from recinet_cli.errors import StructureError

__all__ = ["MISSING_SENTINEL", "entry_id", "entry_value", "parse_value", "to_crystal"]

#: The OPTIMADE export of JARVIS writes missing values as this number.
MISSING_SENTINEL = -99999.0


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
    """A float, or ``NaN`` for anything that is not a usable number (or is -99999)."""
    return parse_float(raw, MISSING_SENTINEL)


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
    atoms = entry.get("atoms")
    if not isinstance(atoms, Mapping):
        atoms = _optimade_atoms(_attributes(entry))
    return atoms_to_crystal(atoms, sid, source)


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
