"""Reading structure files into :class:`~recinet_cli.structures.crystal.Crystal` records.

Supported inputs (format chosen from the file name; ``.gz`` variants are read transparently):

========================  ===================================================================
``*.cif``                 CIF, symmetry operations expanded by pymatgen (every data block)
``POSCAR*``, ``CONTCAR*``, VASP POSCAR (species line required)
``*.vasp``, ``*.poscar``
``*.extxyz``, ``*.xyz``   extended XYZ; every frame is a structure, id ``file#index``
``*.json``                pymatgen ``Structure.as_dict()``, a JARVIS ``atoms`` dict, a JARVIS
                          dft_3d-style entry (``{"jid", "atoms"}``), a list of those, or a
                          pandas "split" table with a ``structure`` column (Matbench files)
========================  ===================================================================

Parsing is delegated to pymatgen and ASE. A file that cannot be read gives one
:class:`ReadFailure`; a multi-structure file reports failures per structure.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recinet_cli.errors import RecinetError, StructureError
from recinet_cli.structures.crystal import Crystal

Format = Literal["cif", "poscar", "extxyz", "json"]
IdMode = Literal["stem", "name", "parent", "path"]
DisorderMode = Literal["fail", "majority"]

_SUFFIX_FORMATS: dict[str, Format] = {
    ".cif": "cif",
    ".mcif": "cif",
    ".vasp": "poscar",
    ".poscar": "poscar",
    ".extxyz": "extxyz",
    ".xyz": "extxyz",
    ".json": "json",
}
_POSCAR_NAME = re.compile(r"^(POSCAR|CONTCAR)([-_.].*)?$", re.IGNORECASE)
_MAX_REASON = 240


@dataclass(frozen=True)
class InputFile:
    """One structure file to read. ``path`` may hold surrogate escapes (undecodable names)."""

    path: str
    fmt: Format
    id_base: str

    @property
    def display(self) -> str:
        return display_path(self.path)


@dataclass(frozen=True)
class ReadFailure:
    """An input (file or one structure in it) that could not be used, with a one-line reason."""

    source: str
    id: str
    reason: str


@dataclass(frozen=True)
class ReadOptions:
    """How to read structures.

    Attributes:
        disorder: ``fail`` (default) refuses partially occupied sites; ``majority`` keeps the
            majority species of each site (and drops sites that are mostly vacant).
    """

    disorder: DisorderMode = "fail"


def display_path(path: str) -> str:
    """A printable form of a path; undecodable bytes are shown as ``\\xNN`` escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def one_line(exc: BaseException | str) -> str:
    """Squash an exception message into one short line."""
    text = str(exc) if not isinstance(exc, str) else exc
    if isinstance(exc, BaseException) and not text:
        text = type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def detect_format(path: str) -> Format | None:
    """The format implied by a file name, or ``None`` when it is not a structure file."""
    name = os.path.basename(path)
    if name.lower().endswith(".gz"):
        name = name[:-3]
    suffix = os.path.splitext(name)[1].lower()
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    if _POSCAR_NAME.match(name):
        return "poscar"
    return None


def _strip_suffixes(name: str) -> str:
    if name.lower().endswith(".gz"):
        name = name[:-3]
    stem, suffix = os.path.splitext(name)
    return stem if suffix.lower() in _SUFFIX_FORMATS else name


def _id_base(path: str, root: str | None, mode: IdMode) -> str:
    name = os.path.basename(path)
    if mode == "name":
        base = name
    elif mode == "parent":
        base = os.path.basename(os.path.dirname(os.path.abspath(path))) or _strip_suffixes(name)
    elif mode == "path":
        rel = os.path.relpath(path, root) if root else path
        base = _strip_suffixes(rel).replace(os.sep, "/")
    else:
        base = _strip_suffixes(name)
    return display_path(base)


def discover_inputs(
    inputs: Sequence[str], id_mode: IdMode = "stem"
) -> tuple[list[InputFile], list[ReadFailure]]:
    """Expand files, directories (recursively) and glob patterns into input files.

    Directories contribute only files whose names look like CIF, POSCAR or extxyz files
    (JSON files are read only when named or matched by a pattern); an explicitly
    named file of unknown type, a missing path, a pattern matching nothing and a directory
    without structure files are reported as failures. The result is sorted and deduplicated.
    """
    files: dict[str, InputFile] = {}
    failures: list[ReadFailure] = []

    def add(path: str, root: str | None, explicit: bool) -> None:
        fmt = detect_format(path)
        if fmt == "json" and not explicit:
            return  # JSON in a directory is usually metadata (e.g. CGCNN's atom_init.json)
        if fmt is None:
            if explicit:
                failures.append(
                    ReadFailure(display_path(path), "", "unrecognised file type (expected CIF, POSCAR/*.vasp, extxyz or JSON)")
                )
            return
        key = os.path.abspath(path)
        if key not in files:
            files[key] = InputFile(path=path, fmt=fmt, id_base=_id_base(path, root, id_mode))

    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            before = len(files)
            for dirpath, dirnames, filenames in os.walk(item):
                dirnames.sort()
                for fn in sorted(filenames):
                    add(os.path.join(dirpath, fn), item, explicit=False)
            if len(files) == before:
                failures.append(ReadFailure(display_path(item), "", "directory contains no structure files"))
        elif os.path.exists(item):
            add(item, None, explicit=True)  # --id-from path: the path as given, like a glob match
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                failures.append(ReadFailure(display_path(item), "", "pattern matches no files"))
            for m in matches:
                if os.path.isdir(m):
                    continue
                add(m, None, explicit=True)
        else:
            failures.append(ReadFailure(display_path(item), "", "no such file or directory"))
    ordered = sorted(files.values(), key=lambda f: os.path.abspath(f.path))
    return ordered, failures


def check_unique_ids(files: Sequence[InputFile]) -> None:
    """Refuse inputs whose ids collide, naming both sources (see ``--id-from``/``--suffix-duplicates``)."""
    seen: dict[str, InputFile] = {}
    for f in files:
        other = seen.get(f.id_base)
        if other is not None:
            raise RecinetError(
                f"duplicate structure id {f.id_base!r}: {other.display} and {f.display} "
                "(use --id-from path, or --suffix-duplicates)"
            )
        seen[f.id_base] = f


def suffix_duplicate_ids(files: Sequence[InputFile]) -> list[InputFile]:
    """Make ids unique by appending ``-2``, ``-3``... to later duplicates (in input order)."""
    counts: dict[str, int] = {}
    taken = {f.id_base for f in files}
    out = []
    for f in files:
        n = counts.get(f.id_base, 0) + 1
        counts[f.id_base] = n
        if n == 1:
            out.append(f)
            continue
        new = f"{f.id_base}-{n}"
        while new in taken:
            n += 1
            new = f"{f.id_base}-{n}"
        taken.add(new)
        out.append(InputFile(f.path, f.fmt, new))
    return out


# --------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------


def from_pymatgen(structure: Any, id: str, source: str, options: ReadOptions = ReadOptions()) -> Crystal:
    """Convert a pymatgen ``Structure`` (ordered, or disordered with ``disorder="majority"``)."""
    from pymatgen.core.periodic_table import DummySpecies

    keep: list[int] = []
    numbers: list[int] = []
    for idx, site in enumerate(structure):
        species = site.species
        items = list(species.items())
        for sp, _ in items:
            if isinstance(sp, DummySpecies):
                raise StructureError(f"unknown element symbol {sp.symbol!r}")
        if len(items) == 1 and abs(items[0][1] - 1.0) < 1e-8:
            keep.append(idx)
            numbers.append(int(items[0][0].Z))
            continue
        if options.disorder == "fail":
            desc = ", ".join(f"{sp}:{occ:g}" for sp, occ in items)
            raise StructureError(
                f"disordered site {idx} (partial occupancy {desc}); use --disorder majority to keep the majority species"
            )
        sp, occ = max(items, key=lambda so: so[1])
        if occ < 1.0 - float(species.num_atoms):  # the vacancy is the majority
            continue
        keep.append(idx)
        numbers.append(int(sp.Z))
    if not keep:
        raise StructureError("structure has no atoms")
    frac = np.asarray(structure.frac_coords)[keep]
    return Crystal.create(id, source, np.asarray(structure.lattice.matrix), frac, np.asarray(numbers))


def from_ase(atoms: Any, id: str, source: str) -> Crystal:
    """Convert an ASE ``Atoms`` with a full-rank cell (pbc flags are not required)."""
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if abs(np.linalg.det(cell)) < 1e-8:
        raise StructureError("no periodic cell (the frame's lattice is missing or degenerate)")
    numbers = np.asarray(atoms.numbers)
    if (numbers <= 0).any():
        raise StructureError("unknown element symbol in frame")
    frac = np.linalg.solve(cell.T, np.asarray(atoms.positions, dtype=np.float64).T).T
    return Crystal.create(id, source, cell, frac, numbers)


def from_jarvis_atoms(d: dict[str, Any], id: str, source: str) -> Crystal:
    """Convert a JARVIS ``atoms`` dict (``lattice_mat``, ``coords``, ``elements``, ``cartesian``)."""
    from pymatgen.core.periodic_table import Element

    try:
        lattice = np.asarray(d["lattice_mat"], dtype=np.float64).reshape(3, 3)
        coords = np.asarray(d["coords"], dtype=np.float64).reshape(-1, 3)
        elements = list(d["elements"])
    except (KeyError, ValueError, TypeError) as exc:
        raise StructureError(f"malformed JARVIS atoms dict: {one_line(exc)}") from exc
    numbers = []
    for sym in elements:
        try:
            numbers.append(Element(str(sym).strip()).Z)
        except ValueError:
            raise StructureError(f"unknown element symbol {sym!r}") from None
    if d.get("cartesian", False):
        if abs(np.linalg.det(lattice)) < 1e-12:
            raise StructureError("degenerate lattice: cell volume 0 Å^3")
        frac = np.linalg.solve(lattice.T, coords.T).T
    else:
        frac = coords
    return Crystal.create(id, source, lattice, frac, np.asarray(numbers))


# --------------------------------------------------------------------------------------
# Per-format readers: each yields Crystal or ReadFailure
# --------------------------------------------------------------------------------------

Result = Crystal | ReadFailure


def _read_text(path: str) -> str:
    with open(path, "rb") as fh:
        raw = fh.read()
    if path.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise StructureError(f"not a valid gzip file: {one_line(exc)}") from exc
    if not raw.strip():
        raise StructureError("file is empty")
    if b"\x00" in raw[:4096]:
        raise StructureError("binary data, not a text structure file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _multi_ids(base: str, n: int) -> list[str]:
    return [base] if n == 1 else [f"{base}#{i}" for i in range(n)]


def _read_cif(f: InputFile, options: ReadOptions) -> Iterator[Result]:
    from pymatgen.io.cif import CifParser

    text = _read_text(f.path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parser = CifParser(io.StringIO(text), occupancy_tolerance=1.0)
            structures = parser.parse_structures(primitive=False, on_error="raise")
        except Exception as exc:  # pymatgen raises ValueError, KeyError, IndexError...
            raise StructureError(f"cannot parse CIF: {one_line(exc)}") from exc
    if not structures:
        raise StructureError("cannot parse CIF: no structure in file")
    ids = _multi_ids(f.id_base, len(structures))
    for i, (sid, st) in enumerate(zip(ids, structures, strict=True)):
        source = f.display if len(structures) == 1 else f"{f.display}#{i}"
        yield _guard(lambda st=st, sid=sid, source=source: from_pymatgen(st, sid, source, options), source, sid)


def _read_poscar(f: InputFile, options: ReadOptions) -> Iterator[Result]:
    from pymatgen.io.vasp import Poscar

    text = _read_text(f.path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            poscar = Poscar.from_str(text, read_velocities=False)
        except Exception as exc:
            raise StructureError(f"cannot parse POSCAR: {one_line(exc)}") from exc
    # Without a species line (VASP 4) pymatgen silently invents elements (H, He, Li...).
    if any("cannot be determined" in str(w.message) for w in caught):
        raise StructureError("POSCAR has no species line (VASP 4 format): element symbols are unknown")
    yield from_pymatgen(poscar.structure, f.id_base, f.display, options)


def _xyz_frames(text: str) -> list[str]:
    """Split extxyz text into frame texts the way ASE scans it (count, comment, atoms, VEC lines).

    A line where a frame count is expected but which is not one starts a last, broken frame.
    """
    lines = io.StringIO(text).readlines()
    frames: list[str] = []
    i = 0
    while i < len(lines) and lines[i].strip():
        try:
            natoms = int(lines[i])
        except ValueError:
            if not frames:
                raise StructureError(
                    f"cannot parse extxyz: expected an atom count on line 1, got {one_line(lines[i])[:40]!r}"
                ) from None
            frames.append("".join(lines[i:]))
            break
        j = i + 2 + max(natoms, 0)
        while j < len(lines) and lines[j].lstrip().startswith("VEC"):
            j += 1
        frames.append("".join(lines[i:j]))
        i = j
    return frames


def _crystal_from_xyz_frame(text: str, sid: str, source: str) -> Crystal:
    from ase.data import atomic_numbers
    from ase.io import read

    try:
        atoms = read(io.StringIO(text), index=0, format="extxyz")
    except KeyError as exc:  # ASE's symbol lookup: KeyError('Xx')
        key = exc.args[0] if exc.args else None
        if isinstance(key, str) and key not in atomic_numbers and re.fullmatch(r"[A-Z][a-z]{0,2}", key):
            raise StructureError(f"unknown element symbol {key!r}") from None
        raise StructureError(f"cannot parse extxyz: {one_line(exc)}") from exc
    except Exception as exc:
        raise StructureError(f"cannot parse extxyz: {one_line(exc)}") from exc
    return from_ase(atoms, sid, source)


def _read_extxyz(f: InputFile, options: ReadOptions) -> Iterator[Result]:
    text = _read_text(f.path)
    frames = _xyz_frames(text)  # one frame at a time, so that a bad frame fails alone
    if not frames:
        raise StructureError("cannot parse extxyz: no frames")
    for i, frame in enumerate(frames):
        sid, source = f"{f.id_base}#{i}", f"{f.display}#{i}"
        yield _guard(lambda frame=frame, sid=sid, source=source: _crystal_from_xyz_frame(frame, sid, source), source, sid)


def _json_entries(obj: Any, base: str) -> list[tuple[str, Any]]:
    """(id, structure-like) pairs from the JSON layouts we accept."""
    if isinstance(obj, dict) and {"index", "columns", "data"} <= obj.keys():
        cols = list(obj["columns"])
        if "structure" not in cols:
            raise StructureError("pandas-split JSON without a 'structure' column")
        k = cols.index("structure")
        return [(str(idx), row[k]) for idx, row in zip(obj["index"], obj["data"], strict=False)]
    if isinstance(obj, list):
        if not obj:
            raise StructureError("JSON list is empty")
        out = []
        for i, item in enumerate(obj):
            key = None
            if isinstance(item, dict):
                key = item.get("jid") or item.get("material_id") or item.get("id")
            out.append((str(key) if key else f"{base}#{i}", item))
        return out
    if isinstance(obj, dict):
        key = obj.get("jid") or obj.get("material_id")
        return [(str(key) if key else base, obj)]
    raise StructureError("JSON is neither a structure dict nor a list of them")


def _crystal_from_json(item: Any, sid: str, source: str, options: ReadOptions) -> Crystal:
    if not isinstance(item, dict):
        raise StructureError("JSON entry is not an object")
    if "atoms" in item and isinstance(item["atoms"], dict):
        item = item["atoms"]
    elif "structure" in item and isinstance(item["structure"], dict):
        item = item["structure"]
    if {"lattice_mat", "coords", "elements"} <= item.keys():
        return from_jarvis_atoms(item, sid, source)
    if "lattice" in item and "sites" in item:
        from pymatgen.core import Structure

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                st = Structure.from_dict(item)
            except Exception as exc:
                raise StructureError(f"invalid pymatgen Structure JSON: {one_line(exc)}") from exc
        return from_pymatgen(st, sid, source, options)
    raise StructureError("JSON object is not a pymatgen Structure or a JARVIS atoms dict")


def _read_json(f: InputFile, options: ReadOptions) -> Iterator[Result]:
    text = _read_text(f.path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StructureError(f"invalid JSON: {one_line(exc)}") from exc
    entries = _json_entries(obj, f.id_base)
    multi = len(entries) > 1 or isinstance(obj, list)
    for i, (sid, item) in enumerate(entries):
        source = f"{f.display}#{i}" if multi else f.display
        yield _guard(lambda item=item, sid=sid, source=source: _crystal_from_json(item, sid, source, options), source, sid)


def _guard(make: Any, source: str, sid: str) -> Result:
    try:
        return make()
    except StructureError as exc:
        return ReadFailure(source, sid, str(exc))
    except Exception as exc:  # a parser bug must not lose the other structures
        return ReadFailure(source, sid, f"{type(exc).__name__}: {one_line(exc)}")


_READERS = {"cif": _read_cif, "poscar": _read_poscar, "extxyz": _read_extxyz, "json": _read_json}


def read_file(f: InputFile, options: ReadOptions = ReadOptions()) -> list[Result]:
    """Read every structure of one input file; never raises for bad content."""
    try:
        return list(_READERS[f.fmt](f, options))
    except StructureError as exc:
        return [ReadFailure(f.display, f.id_base, str(exc))]
    except OSError as exc:
        return [ReadFailure(f.display, f.id_base, f"cannot read file: {exc.strerror or one_line(exc)}")]
    except Exception as exc:
        return [ReadFailure(f.display, f.id_base, f"{type(exc).__name__}: {one_line(exc)}")]


def read_structures(
    inputs: Iterable[str | Path], id_mode: IdMode = "stem", options: ReadOptions = ReadOptions()
) -> tuple[list[Crystal], list[ReadFailure]]:
    """Convenience: discover and read everything in the current process."""
    files, failures = discover_inputs([os.fspath(p) for p in inputs], id_mode)
    crystals: list[Crystal] = []
    for f in files:
        for r in read_file(f, options):
            (crystals if isinstance(r, Crystal) else failures).append(r)
    return crystals, failures
