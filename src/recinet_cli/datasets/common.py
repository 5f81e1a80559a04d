"""Shared machinery of the dataset plugins that read a JSON list of entries.

``recinet-jarvis`` (JARVIS-DFT dft_3d / dft_2d) and ``recinet-mp`` (MP-2018.6.1 ``megnet.json``)
read the same kind of file and ship their official splits in the same format; what they have
in common lives here:

* reading: :func:`read_json_entries` (a ``.json``, ``.json.gz`` or ``.zip`` holding one JSON
  list of objects), :func:`parse_float` (a label -> float, ``NaN`` when missing) and
  :func:`atoms_to_crystal` (a JARVIS ``atoms`` dict -> validated
  :class:`~recinet_cli.structures.crystal.Crystal`);
* collecting: :func:`collect_structures` converts the labelled entries, skips unusable
  structures and repeated ids, and warns once per kind of skipped entry;
* splits: :func:`seeded_split` (the jarvis-tools/ALIGNN ``get_id_train_val_test``
  procedure), :func:`restrict_split` (official id lists limited to the loaded, labelled ids,
  parts made disjoint with test > val > train), and the shipped split tables
  (:func:`build_split_file`, :func:`read_split_file`, :class:`ShippedSplits`);
* :class:`JsonEntriesDataset`, the plugin base class that resolves properties, fetches the
  file and assembles the :class:`~recinet_cli.contracts.DatasetSplit`.

Split file format (``recinet-split-ids/1``, gzipped JSON)::

    {"format": "recinet-split-ids/1", "source": "...",
     "tables": {TABLE: {"train": IDS, "val": IDS, "test": IDS}},
     "properties": {property name: TABLE}}

where ``IDS = {"numbered": {PREFIX: [delta, ...]}, "other": [id, ...]}``: an id
``PREFIX + str(n)`` (``JVASP-``, ``mp-``, ``mvc-``) is stored as the difference of ``n`` to the
previous number of the same prefix (numbers sorted ascending), everything else verbatim.
Properties with identical splits share one table.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import re
import sys
import warnings
import zipfile
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np

from recinet_cli.contracts import DatasetPlugin, DatasetSplit, PropertyInfo
from recinet_cli.download import RemoteFile, fetch
from recinet_cli.errors import PluginError, StructureError

if TYPE_CHECKING:
    from recinet_cli.structures.crystal import Crystal

__all__ = [
    "PARTS",
    "SPLIT_FORMAT",
    "Collected",
    "Entry",
    "EntryProperty",
    "JsonEntriesDataset",
    "ShippedSplits",
    "Split",
    "atoms_to_crystal",
    "build_split_file",
    "collect_structures",
    "decode_ids",
    "encode_ids",
    "ids_split",
    "parse_float",
    "read_json_entries",
    "read_leaderboard",
    "read_package_splits",
    "read_split_file",
    "restrict_split",
    "seeded_split",
]

#: One entry of a dataset file (a JSON object).
Entry = Mapping[str, Any]
#: ``{part: [ids]}`` with the parts of :data:`PARTS`.
Split = dict[str, list[str]]

#: The split parts, in order.
PARTS: tuple[str, str, str] = ("train", "val", "test")
#: The ``format`` tag of a shipped split file.
SPLIT_FORMAT = "recinet-split-ids/1"

_NUMBERED = re.compile(r"^(.*?)([1-9][0-9]*|0)$")


# --------------------------------------------------------------------------------------
# Reading entries
# --------------------------------------------------------------------------------------


def read_json_entries(
    path: Path, member: str | None = None, *, wrapper_key: str | None = None
) -> list[Entry]:
    """The ``[n_entries]`` entry dicts in a ``.json``, ``.json.gz`` or ``.zip`` file.

    The compression is recognised by content (magic bytes), not by the file name.

    Args:
        path: The file. A zip must hold ``member`` or exactly one ``.json`` file (hidden
            files such as ``__MACOSX/._x.json`` are not counted).
        member: Preferred member name inside a zip (e.g. ``megnet.json``).
        wrapper_key: When given, a document ``{wrapper_key: [...]}`` (e.g. an OPTIMADE
            response, ``"data"``) is unwrapped to its list.

    Raises:
        PluginError: unreadable file, or not a JSON list of objects.
    """
    try:
        doc = _load_json(path, member)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise PluginError(f"{path}: cannot read JSON ({type(exc).__name__}: {exc})") from exc
    if wrapper_key is not None and isinstance(doc, dict) and isinstance(doc.get(wrapper_key), list):
        doc = doc[wrapper_key]
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


def parse_float(raw: Any, missing: float | None = None) -> float:
    """A label as a float, or ``NaN`` for anything that is not a usable number.

    ``None``, booleans, non-numeric strings (``"na"``) and other types give ``NaN``; numeric
    strings are parsed; ``NaN`` stays ``NaN``.

    Args:
        raw: The value from the JSON entry.
        missing: A sentinel number that also means "missing" (JARVIS OPTIMADE: -99999).
    """
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
    if missing is not None and value == missing:
        return math.nan
    return value


def atoms_to_crystal(atoms: Mapping[str, Any], sid: str, source: str) -> Crystal:
    """A validated :class:`~recinet_cli.structures.crystal.Crystal` from a JARVIS ``atoms`` dict.

    Args:
        atoms: ``{"lattice_mat": [3, 3] Å, "coords": [n_atoms, 3], "elements": [n_atoms],
            "cartesian": bool}`` (fractional coordinates unless ``cartesian``).
        sid: The structure id.
        source: Where it came from (e.g. ``"megnet.json#mp-1234"``), for messages.

    Raises:
        StructureError: the converter or the validation rejects the structure.
    """
    from recinet_cli.structures.crystal import validate_crystal
    from recinet_cli.structures.readers import from_jarvis_atoms

    crystal = from_jarvis_atoms(dict(atoms), sid, source)
    validate_crystal(crystal)
    return crystal


# --------------------------------------------------------------------------------------
# Collecting structures
# --------------------------------------------------------------------------------------


def collect_structures(
    candidates: Iterable[tuple[str, Entry]],
    to_crystal: Callable[[Entry, str, str], Crystal],
    source: str,
    category: type[Warning],
    *,
    stacklevel: int = 1,
) -> tuple[list[Crystal], list[int]]:
    """Convert the candidate entries, skipping unusable structures and repeated ids.

    Each candidate ``(sid, entry)`` is converted with ``to_crystal(entry, sid,
    f"{source}#{sid}")``; a :class:`~recinet_cli.errors.StructureError` skips it, and so does
    an id already kept (the first entry of an id wins). Afterwards one ``category`` warning is
    issued per kind of skipped entry (unusable structure, duplicate id), with the count and
    the first five ids.

    Args:
        candidates: ``[n]`` ``(id, entry)`` pairs, in file order.
        to_crystal: The plugin's entry -> Crystal converter.
        source: The file name, used in the warnings and the crystals' ``source``.
        category: The plugin's warning class.
        stacklevel: As for :func:`warnings.warn` called by the caller of this function
            (1 = the caller's own line, 2 = its caller, ...).

    Returns:
        ``(crystals, kept)``: the ``[k]`` kept crystals and the ``[k]`` positions in
        ``candidates`` they came from.
    """
    crystals: list[Crystal] = []
    kept: list[int] = []
    seen: set[str] = set()
    failed: list[tuple[str, str]] = []
    duplicates: list[str] = []
    for pos, (sid, entry) in enumerate(candidates):
        if sid in seen:
            duplicates.append(sid)
            continue
        try:
            crystal = to_crystal(entry, sid, f"{source}#{sid}")
        except StructureError as exc:
            failed.append((sid, str(exc)))
            continue
        seen.add(sid)
        crystals.append(crystal)
        kept.append(pos)
    _warn_skipped(source, failed, duplicates, category, stacklevel + 2)
    return crystals, kept


def _warn_skipped(
    source: str,
    failed: list[tuple[str, str]],
    duplicates: list[str],
    category: type[Warning],
    stacklevel: int,
) -> None:
    """One warning per kind of skipped entry, with the count and the first few ids."""
    if failed:
        first = ", ".join(sid for sid, _ in failed[:5])
        warnings.warn(
            f"{source}: skipped {len(failed)} entr{'y' if len(failed) == 1 else 'ies'} whose "
            f"structure could not be used (first: {first}; {failed[0][0]}: {failed[0][1]})",
            category,
            stacklevel=stacklevel,
        )
    if duplicates:
        first = ", ".join(duplicates[:5])
        warnings.warn(
            f"{source}: {len(duplicates)} duplicate id(s), kept the first entry of each (first: {first})",
            category,
            stacklevel=stacklevel,
        )


@dataclass
class Collected:
    """What a plugin's ``_collect`` reads from the entries.

    Attributes:
        crystals: ``[n]`` the kept structures (at least one finite requested label).
        targets: ``[n, n_props]`` float64 in the properties' units, NaN = missing.
        labelled: ``{prop: [ids]}`` every entry with a label in the file, in file order,
            before any structure was dropped (what a seeded split is computed over).
    """

    crystals: list[Crystal]
    targets: np.ndarray
    labelled: dict[str, list[str]]

    def present(self, column: int) -> set[str]:
        """Ids of the loaded structures with a finite label in ``targets[:, column]``."""
        finite = np.isfinite(self.targets[:, column])
        return {c.id for c, ok in zip(self.crystals, finite) if ok}


# --------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------


def seeded_split(
    total_size: int,
    *,
    split_seed: int = 123,
    val_ratio: float = 0.1,
    test_ratio: float = 0.1,
    train_ratio: float | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
) -> tuple[list[int], list[int], list[int]]:
    """jarvis-tools/ALIGNN ``get_id_train_val_test``: ``(train, val, test)`` index lists.

    ``random.seed(split_seed)`` then ``random.shuffle`` of ``[0, total_size)``; train is the
    first ``n_train`` indices, test the last ``n_test``, val the ``n_val`` before those.
    Counts default to ``int(ratio * total_size)`` with ``train_ratio = 1 - val - test``, so
    a few indices may be left unused, exactly as in the reference. One case differs: with
    ``n_test == 0`` the reference's slices give an empty val part and *everything* as test
    (``ids[-0:]``); here test is empty and val is the last ``n_val`` (only matters below 10
    items with the default ratios). A private ``random.Random(split_seed)`` is used, which
    gives the same permutation as the reference's ``random.seed`` without touching the
    global generator.

    Raises:
        ValueError: ``n_train + n_val + n_test > total_size``.
    """
    if train_ratio is None:
        train_ratio = 1 - val_ratio - test_ratio
    n_train = int(train_ratio * total_size) if n_train is None else n_train
    n_test = int(test_ratio * total_size) if n_test is None else n_test
    n_val = int(val_ratio * total_size) if n_val is None else n_val
    if n_train + n_val + n_test > total_size:
        raise ValueError(f"split sizes {n_train}+{n_val}+{n_test} exceed {total_size} items")
    ids = list(range(total_size))
    random.Random(split_seed).shuffle(ids)
    end = total_size - n_test
    return ids[:n_train], ids[end - n_val : end], ids[end:]


def ids_split(ids: Sequence[str], parts: Sequence[Sequence[int]]) -> Split:
    """``{part: [ids]}`` from ``(train, val, test)`` index lists into ``[n]`` ``ids``."""
    return {part: [ids[i] for i in idx] for part, idx in zip(PARTS, parts)}


def restrict_split(split: Mapping[str, Iterable[str]], present: set[str]) -> Split:
    """``split`` limited to the ids in ``present``, parts made disjoint (test > val > train).

    List order is kept. An id listed in two parts (duplicate ids in the source) stays only in
    the first of test, val, train that lists it, so no test structure is ever trained on.
    Missing parts come back empty; the result has the parts in :data:`PARTS` order.
    """
    taken: set[str] = set()
    out: Split = {}
    for part in ("test", "val", "train"):
        keep = [sid for sid in split.get(part, ()) if sid in present and sid not in taken]
        taken.update(keep)
        out[part] = keep
    return {part: out[part] for part in PARTS}


def encode_ids(ids: Sequence[str]) -> dict[str, object]:
    """Encode ``[n]`` ids compactly (sorted; see the module docstring). Order is not kept."""
    numbered: dict[str, list[int]] = {}
    other: list[str] = []
    for sid in ids:
        m = _NUMBERED.match(sid)
        if m is None:
            other.append(sid)
        else:
            numbered.setdefault(m.group(1), []).append(int(m.group(2)))
    deltas: dict[str, list[int]] = {}
    for prefix, nums in sorted(numbered.items()):
        nums.sort()
        deltas[prefix] = [b - a for a, b in zip([0, *nums[:-1]], nums)]
    return {"numbered": deltas, "other": sorted(other)}


def decode_ids(blob: Mapping[str, object]) -> list[str]:
    """Inverse of :func:`encode_ids`: ``[n]`` ids, numbered ones by prefix then number."""
    out: list[str] = []
    numbered = blob.get("numbered", {})
    assert isinstance(numbered, dict)
    for prefix, deltas in numbered.items():
        n = 0
        for d in deltas:
            n += int(d)
            out.append(f"{prefix}{n}")
    other = blob.get("other", [])
    assert isinstance(other, list)
    out.extend(str(s) for s in other)
    return out


def read_leaderboard(path: str | Path) -> Split:
    """``{part: [ids]}`` from one JARVIS leaderboard zip.

    The zip holds one JSON ``{"train": {id: target}, "val": {...}, "test": {...}}``; the ids
    come back in the file's order (targets are dropped).

    Raises:
        ValueError: not exactly one ``.json`` member.
    """
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith(".json")]
        if len(names) != 1:
            raise ValueError(f"{path}: expected one .json member, found {names}")
        data = json.loads(zf.read(names[0]))
    return {part: [str(k) for k in data[part]] for part in PARTS}


def build_split_file(
    leaderboard_dir: str | Path,
    out: str | Path,
    files: Mapping[str, str],
    source: str,
) -> dict[str, dict[str, int]]:
    """Write a split file from leaderboard zips; returns ``{prop: {part: n_ids}}``.

    The output is deterministic (sorted keys, gzip level 9, ``mtime=0``), so rebuilding from
    the same zips gives the same bytes.

    Args:
        leaderboard_dir: The folder holding the zips.
        out: The ``.json.gz`` file to write.
        files: ``{property name: zip file name}``; a table is named after its first zip
            (without ``.json.zip``) and shared by the properties with identical splits.
        source: Free text recorded as ``"source"``.
    """
    tables: dict[str, dict[str, object]] = {}
    keys: dict[str, str] = {}
    properties: dict[str, str] = {}
    sizes: dict[str, dict[str, int]] = {}
    for prop, fname in files.items():
        split = read_leaderboard(Path(leaderboard_dir) / fname)
        sizes[prop] = {part: len(split[part]) for part in PARTS}
        encoded = {part: encode_ids(split[part]) for part in PARTS}
        key = json.dumps(encoded, sort_keys=True)
        if key not in keys:
            table = fname.removesuffix(".json.zip")
            tables[table] = encoded
            keys[key] = table
        properties[prop] = keys[key]
    doc = {"format": SPLIT_FORMAT, "source": source, "tables": tables, "properties": properties}
    payload = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    Path(out).write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))
    return sizes


def read_split_file(path: str | Path) -> dict[str, Split]:
    """``{property: {part: [ids]}}`` from a file written by :func:`build_split_file`.

    Properties sharing a table share the same (decoded) lists.

    Raises:
        ValueError: the file is not in the ``recinet-split-ids/1`` format.
    """
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    if doc.get("format") != SPLIT_FORMAT:
        raise ValueError(f"{path}: not a {SPLIT_FORMAT} file")
    tables = doc["tables"]
    properties = doc["properties"]
    assert isinstance(tables, dict) and isinstance(properties, dict)
    decoded = {name: {part: decode_ids(t[part]) for part in PARTS} for name, t in tables.items()}
    return {prop: decoded[table] for prop, table in properties.items()}


def read_package_splits(package: str, name: str) -> dict[str, Split]:
    """:func:`read_split_file` of the package-data file ``<package>/data/<name>``."""
    ref = resources.files(package).joinpath("data", name)
    with resources.as_file(ref) as path:
        return read_split_file(path)


@dataclass(frozen=True)
class ShippedSplits:
    """The split file a plugin package ships, rebuilt from JARVIS leaderboard zips.

    A plugin's ``splits`` module binds the three methods as its public functions, e.g.
    ``shipped_splits = SPLITS.read``, ``build_split_file = SPLITS.build`` and
    ``main = SPLITS.main`` (for ``python -m <package>.splits LEADERBOARD_DIR [OUT]``).

    Attributes:
        package: The plugin package (``recinet_jarvis``); the file is ``<package>/data/<filename>``.
        filename: The package-data file name (``dft_3d_2021_splits.json.gz``).
        files: ``{property name: leaderboard zip file name}``.
        source: Recorded as the file's ``"source"``.
        usage_note: Printed before the usage line on a usage error.
    """

    package: str
    filename: str
    files: Mapping[str, str]
    source: str
    usage_note: str = ""
    _cache: dict[str, dict[str, Split]] = field(default_factory=dict, repr=False, compare=False)

    def read(self) -> dict[str, Split]:
        """The shipped splits, ``{property: {part: [ids]}}``, read once and cached.

        Callers must not mutate the returned lists.
        """
        if "splits" not in self._cache:
            self._cache["splits"] = read_package_splits(self.package, self.filename)
        return self._cache["splits"]

    def build(
        self,
        leaderboard_dir: str | Path,
        out: str | Path,
        files: Mapping[str, str] | None = None,
        source: str | None = None,
    ) -> dict[str, dict[str, int]]:
        """:func:`build_split_file` with this package's ``files`` and ``source`` by default."""
        return build_split_file(
            leaderboard_dir, out, self.files if files is None else files, self.source if source is None else source
        )

    def default_out(self) -> Path:
        """The package-data file itself (what ``main`` rewrites when no ``OUT`` is given)."""
        module_file = import_module(self.package).__file__
        assert module_file is not None
        return Path(module_file).parent / "data" / self.filename

    def main(self, argv: Sequence[str] | None = None) -> int:
        """``python -m <package>.splits LEADERBOARD_DIR [OUT.json.gz]``: rebuild the file.

        Returns:
            The exit status: 0, or 2 on a usage error.
        """
        args = list(sys.argv[1:] if argv is None else argv)
        if not 1 <= len(args) <= 2:
            if self.usage_note:
                print(self.usage_note, file=sys.stderr)
            print(f"usage: python -m {self.package}.splits LEADERBOARD_DIR [OUT.json.gz]", file=sys.stderr)
            return 2
        out = Path(args[1]) if len(args) == 2 else self.default_out()
        sizes = self.build(args[0], out)
        for prop, n in sizes.items():
            print(f"{prop}: {n['train']}/{n['val']}/{n['test']}")
        print(f"wrote {out} ({out.stat().st_size} bytes)")
        return 0


# --------------------------------------------------------------------------------------
# The plugin base class
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryProperty:
    """One property of an entry-list dataset.

    Attributes:
        name: Canonical name (``formation_energy``).
        unit: Unit of the returned targets (``eV/atom``).
        key: The entry's key holding the value in the source file.
        description: One line for listings.
        aliases: Other accepted names.
    """

    name: str
    unit: str
    key: str
    description: str
    aliases: tuple[str, ...] = field(default=())


P = TypeVar("P", bound=EntryProperty)


class JsonEntriesDataset(DatasetPlugin, Generic[P]):
    """A dataset read from one downloaded JSON list of entries, with a split per property.

    Subclasses set :attr:`remote`, :attr:`member`, :attr:`property_defs` (and
    :attr:`wrapper_key` if needed) and implement :meth:`_collect` and :meth:`_splits`;
    :meth:`_size` may give the labelled count of each property for the listing.
    """

    #: The file to download (or to take from ``--data`` / its environment variable).
    remote: ClassVar[RemoteFile]
    #: The JSON member name inside the downloaded zip.
    member: ClassVar[str]
    #: See :func:`read_json_entries`.
    wrapper_key: ClassVar[str | None] = None
    #: The properties, in listing order.
    property_defs: ClassVar[Sequence[EntryProperty]]

    def properties(self) -> list[PropertyInfo]:
        return [
            PropertyInfo(p.name, p.unit, p.description, p.aliases, self._size(p.name))
            for p in self.property_defs
        ]

    def _size(self, name: str) -> int | None:
        """Labelled count of the full dataset, or ``None`` when unknown."""
        return None

    def _resolve(self, props: Sequence[str]) -> tuple[list[P], tuple[PropertyInfo, ...]]:
        """Resolve names/aliases; reject an empty or repeated request."""
        if isinstance(props, str):
            props = [props]
        if not props:
            raise PluginError(f"dataset {self.name!r}: no property requested")
        infos = tuple(self.property_info(p) for p in props)
        names = [i.name for i in infos]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise PluginError(f"dataset {self.name!r}: property {repeated[0]!r} requested more than once")
        by_name: dict[str, Any] = {p.name: p for p in self.property_defs}
        return [by_name[n] for n in names], infos

    def load(
        self, props: Sequence[str], *, data: Path | None = None, fold: int | None = None
    ) -> DatasetSplit:
        """Load the requested properties: ``targets`` ``[n_structures, len(props)]``.

        Raises:
            PluginError: ``fold`` given, unknown property, unreadable file.
            DownloadError: no local copy and the download fails.
        """
        if fold is not None:
            raise PluginError(f"dataset {self.name!r} has one fixed split; --fold is not supported")
        resolved, infos = self._resolve(props)
        path = fetch(self.remote, local=data)
        entries = read_json_entries(path, self.member, wrapper_key=self.wrapper_key)
        collected = self._collect(entries, resolved, path.name)
        splits = self._splits(collected, resolved, path.name)
        return DatasetSplit(
            self.name, self.dataset_version, collected.crystals, collected.targets, infos, {}, splits
        )

    @abstractmethod
    def _collect(self, entries: Sequence[Entry], props: Sequence[P], source: str) -> Collected:
        """Crystals and ``[n, len(props)]`` targets of the entries with a requested label.

        Called from :meth:`load` (so ``stacklevel=3`` here points at the caller of ``load``).
        """

    @abstractmethod
    def _splits(self, collected: Collected, props: Sequence[P], source: str) -> dict[str, Split]:
        """``{property name: {part: [ids]}}`` for the loaded data."""
