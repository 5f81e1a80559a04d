"""Official JARVIS dft_3d splits: the shipped id lists, how to rebuild them, and the seeded split.

The JARVIS leaderboard publishes, per dft_3d task, a zip holding one JSON
``{"train": {jid: target}, "val": {...}, "test": {...}}``. We ship only the ids, in
``data/dft_3d_2021_splits.json.gz``, rebuilt with::

    python -m recinet_jarvis.splits /path/to/leaderboard_splits [OUT.json.gz]

File format (``recinet-split-ids/1``)::

    {"format": "recinet-split-ids/1",
     "tables": {TABLE: {"train": IDS, "val": IDS, "test": IDS}},
     "properties": {property name: TABLE}}

where ``IDS = {"numbered": {PREFIX: [delta, ...]}, "other": [id, ...]}``: an id
``PREFIX + str(n)`` is stored as the difference of ``n`` to the previous number of the same
prefix (numbers sorted ascending), everything else verbatim. Properties with identical splits
share one table (formation energy, OptB88vdW gap and total energy; bulk and shear modulus).

:func:`seeded_split` is the jarvis-tools/ALIGNN ``get_id_train_val_test`` procedure, used
where no official split exists (``jarvis_2d``).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

__all__ = [
    "FORMAT",
    "LEADERBOARD_FILES",
    "PARTS",
    "SHIPPED",
    "build_split_file",
    "decode_ids",
    "encode_ids",
    "read_leaderboard",
    "read_split_file",
    "seeded_split",
    "shipped_splits",
]

FORMAT = "recinet-split-ids/1"
#: The split parts, in order.
PARTS = ("train", "val", "test")
#: Package-data file name of the shipped dft_3d splits.
SHIPPED = "dft_3d_2021_splits.json.gz"

#: Canonical property name -> leaderboard zip file name.
LEADERBOARD_FILES: dict[str, str] = {
    "formation_energy": "dft_3d_formation_energy_peratom.json.zip",
    "bandgap_opt": "dft_3d_optb88vdw_bandgap.json.zip",
    "total_energy": "dft_3d_optb88vdw_total_energy.json.zip",
    "bandgap_mbj": "dft_3d_mbj_bandgap.json.zip",
    "ehull": "dft_3d_ehull.json.zip",
    "bulk_modulus": "dft_3d_bulk_modulus_kv.json.zip",
    "shear_modulus": "dft_3d_shear_modulus_gv.json.zip",
    "exfoliation_energy": "dft_3d_exfoliation_energy.json.zip",
}

Split = dict[str, list[str]]
_NUMBERED = re.compile(r"^(.*?)([1-9][0-9]*|0)$")


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
    """``{part: [ids]}`` from one leaderboard zip (one JSON ``{part: {id: target}}`` inside)."""
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith(".json")]
        if len(names) != 1:
            raise ValueError(f"{path}: expected one .json member, found {names}")
        data = json.loads(zf.read(names[0]))
    return {part: [str(k) for k in data[part]] for part in PARTS}


def build_split_file(
    leaderboard_dir: str | Path,
    out: str | Path,
    files: Mapping[str, str] = LEADERBOARD_FILES,
    source: str = "JARVIS leaderboard dft_3d (2021) splits",
) -> dict[str, dict[str, int]]:
    """Write the shipped split file from the leaderboard zips; returns ``{prop: {part: n}}``."""
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
    doc = {"format": FORMAT, "source": source, "tables": tables, "properties": properties}
    payload = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    Path(out).write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))
    return sizes


def read_split_file(path: str | Path) -> dict[str, Split]:
    """``{property: {part: [ids]}}`` from a split file written by :func:`build_split_file`."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    return _decode_doc(doc, str(path))


def _decode_doc(doc: Mapping[str, object], where: str) -> dict[str, Split]:
    if doc.get("format") != FORMAT:
        raise ValueError(f"{where}: not a {FORMAT} file")
    tables = doc["tables"]
    properties = doc["properties"]
    assert isinstance(tables, dict) and isinstance(properties, dict)
    decoded = {name: {part: decode_ids(t[part]) for part in PARTS} for name, t in tables.items()}
    return {prop: decoded[table] for prop, table in properties.items()}


@lru_cache(maxsize=1)
def shipped_splits() -> dict[str, Split]:
    """The official dft_3d splits shipped with the package: ``{property: {part: [jids]}}``.

    The lists are exactly the leaderboard's (a handful of jids occur in two parts because
    dft_3d 2021 holds duplicate jids; :meth:`JarvisDFT3D.load` makes the parts disjoint).
    Callers must not mutate the returned lists (they are cached).
    """
    ref = resources.files("recinet_jarvis").joinpath("data", SHIPPED)
    with resources.as_file(ref) as path:
        return read_split_file(path)


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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recinet_jarvis.splits LEADERBOARD_DIR [OUT]``: rebuild the shipped file."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        print(__doc__.split("\n\n")[1] if __doc__ else "", file=sys.stderr)
        print("usage: python -m recinet_jarvis.splits LEADERBOARD_DIR [OUT.json.gz]", file=sys.stderr)
        return 2
    out = Path(args[1]) if len(args) == 2 else Path(__file__).parent / "data" / SHIPPED
    sizes = build_split_file(args[0], out)
    for prop, n in sizes.items():
        print(f"{prop}: {n['train']}/{n['val']}/{n['test']}")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
