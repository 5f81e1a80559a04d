"""MP-2018.6.1 splits: the shipped leaderboard ids, how to rebuild them, and Matformer's split.

* formation energy / band gap: the official JARVIS leaderboard lists
  (``megnet_e_form.json.zip``, ``megnet_gappbe.json.zip``; 60,000/5,000/4,239, identical for
  both). Only the ids are shipped, in ``data/mp_2018_splits.json.gz``, rebuilt with::

      python -m recinet_mp.splits /path/to/leaderboard_splits [OUT.json.gz]

* bulk / shear modulus: Matformer's setting, computed at load time by :func:`matformer_split`
  (the ids are not available offline, see the README).

Split file format (``recinet-split-ids/1``, as in ``recinet-jarvis``)::

    {"format": "recinet-split-ids/1",
     "tables": {TABLE: {"train": IDS, "val": IDS, "test": IDS}},
     "properties": {property name: TABLE}}

with ``IDS = {"numbered": {PREFIX: [delta, ...]}, "other": [id, ...]}``: an id
``PREFIX + str(n)`` (``mp-``, ``mvc-``) is stored as the difference of ``n`` to the previous
number of the same prefix, numbers sorted ascending.
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
    "MATFORMER_SIZES",
    "PARTS",
    "SHIPPED",
    "build_split_file",
    "decode_ids",
    "encode_ids",
    "matformer_sizes",
    "matformer_split",
    "read_leaderboard",
    "read_split_file",
    "seeded_split",
    "shipped_splits",
]

FORMAT = "recinet-split-ids/1"
PARTS = ("train", "val", "test")
SHIPPED = "mp_2018_splits.json.gz"

#: Canonical property name -> leaderboard zip file name.
LEADERBOARD_FILES: dict[str, str] = {
    "formation_energy": "megnet_e_form.json.zip",
    "bandgap": "megnet_gappbe.json.zip",
}
#: Matformer's ``n_train``/``n_val``/``n_test`` for the megnet moduli (``train_props.py``).
MATFORMER_SIZES = (4664, 393, 393)

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
    source: str = "JARVIS leaderboard MP-2018.6.1 (megnet) splits",
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
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    decoded = {
        name: {part: decode_ids(t[part]) for part in PARTS} for name, t in doc["tables"].items()
    }
    return {prop: decoded[table] for prop, table in doc["properties"].items()}


@lru_cache(maxsize=1)
def shipped_splits() -> dict[str, Split]:
    """The shipped leaderboard splits: ``{"formation_energy"|"bandgap": {part: [ids]}}``.

    Callers must not mutate the returned lists (they are cached).
    """
    ref = resources.files("recinet_mp").joinpath("data", SHIPPED)
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

    ``random.seed(split_seed)``-equivalent shuffle (a private ``random.Random``) of
    ``[0, total_size)``; train = first ``n_train``, test = last ``n_test``, val = the
    ``n_val`` before those. Counts default to ``int(ratio * total_size)``. With
    ``n_test == 0`` the reference's ``ids[-0:]`` would make everything test; here test is
    empty and val is the last ``n_val``.

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


def matformer_sizes(total_size: int) -> tuple[int, int, int]:
    """Matformer's ``(n_train, n_val, n_test)`` = (4664, 393, 393) when ``total_size`` allows.

    Below 5,450 labelled entries (a subset as local copy) the sizes are scaled down in the
    same proportions (``int(total_size * n / 5450)``), since the fixed counts cannot fit.
    """
    full = sum(MATFORMER_SIZES)
    if total_size >= full:
        return MATFORMER_SIZES
    n_train, n_val, n_test = (int(total_size * n / full) for n in MATFORMER_SIZES)
    return n_train, n_val, n_test


def matformer_split(ids: Sequence[str], split_seed: int = 123) -> Split:
    """Matformer's bulk/shear split of ``[n]`` labelled ids given in file order.

    ALIGNN's ``get_id_train_val_test(total_size=n, split_seed=123, n_train=4664, n_val=393,
    n_test=393)`` over the megnet entries with a label (``train_props.py`` of
    YKQ98/Matformer), mapped back to ids.
    """
    n_train, n_val, n_test = matformer_sizes(len(ids))
    parts = seeded_split(len(ids), split_seed=split_seed, n_train=n_train, n_val=n_val, n_test=n_test)
    return {part: [ids[i] for i in idx] for part, idx in zip(PARTS, parts)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recinet_mp.splits LEADERBOARD_DIR [OUT]``: rebuild the shipped file."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        print("usage: python -m recinet_mp.splits LEADERBOARD_DIR [OUT.json.gz]", file=sys.stderr)
        return 2
    out = Path(args[1]) if len(args) == 2 else Path(__file__).parent / "data" / SHIPPED
    sizes = build_split_file(args[0], out)
    for prop, n in sizes.items():
        print(f"{prop}: {n['train']}/{n['val']}/{n['test']}")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
