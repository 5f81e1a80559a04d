"""Tests of :mod:`recinet_cli.datasets.common` (shared by the JSON-entry dataset plugins)."""

from __future__ import annotations

import gzip
import json
import math
import random
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recinet_cli.contracts import DatasetSplit
from recinet_cli.datasets.common import (
    PARTS,
    SPLIT_FORMAT,
    Collected,
    Entry,
    EntryProperty,
    JsonEntriesDataset,
    ShippedSplits,
    Split,
    atoms_to_crystal,
    build_split_file,
    collect_structures,
    decode_ids,
    encode_ids,
    ids_split,
    parse_float,
    read_json_entries,
    read_leaderboard,
    read_package_splits,
    read_split_file,
    restrict_split,
    seeded_split,
)
from recinet_cli.download import RemoteFile
from recinet_cli.errors import PluginError, StructureError
from tests.conftest import shared_path

SUBSET = ("jarvis", "dft_3d_subset_1743.json.gz")


@pytest.fixture
def board() -> Path:
    """The real JARVIS leaderboard split zips."""
    return shared_path("jarvis", "leaderboard_splits")


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def test_read_json_entries_plain_gz_and_zip_agree(tmp_path: Path, jarvis_entries: list[dict[str, Any]]) -> None:
    gz = shared_path(*SUBSET)
    text = json.dumps(jarvis_entries[:50])
    plain = tmp_path / "entries.json"
    plain.write_text(text)
    zp = tmp_path / "entries.bin"  # the kind is recognised by content, not by name
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("__MACOSX/._entries.json", b"junk")  # hidden members are not counted
        zf.writestr("entries.json", text)
    assert read_json_entries(gz) == jarvis_entries
    assert read_json_entries(plain) == read_json_entries(zp) == jarvis_entries[:50]


def test_read_json_entries_zip_member_choice(tmp_path: Path, jarvis_entries: list[dict[str, Any]]) -> None:
    zp = tmp_path / "two.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("a.json", json.dumps(jarvis_entries[:2]))
        zf.writestr("b.json", json.dumps(jarvis_entries[2:5]))
    assert [e["jid"] for e in read_json_entries(zp, "b.json")] == [e["jid"] for e in jarvis_entries[2:5]]
    with pytest.raises(PluginError, match=r"expected one \.json member"):
        read_json_entries(zp)  # no preferred member and two candidates
    with pytest.raises(PluginError, match="expected one"):
        read_json_entries(zp, "missing.json")


def test_read_json_entries_real_dft_2d_zip() -> None:
    entries = read_json_entries(shared_path("jarvis", "dft_2d_1076.json.zip"), "d2-3-12-2021.json")
    assert len(entries) == 1076
    assert all(isinstance(e, dict) and "atoms" in e for e in entries)


def test_read_json_entries_wrapper_key(tmp_path: Path, jarvis_entries: list[dict[str, Any]]) -> None:
    path = tmp_path / "optimade.json"
    path.write_text(json.dumps({"data": jarvis_entries[:3], "meta": {}}))
    assert read_json_entries(path, wrapper_key="data") == jarvis_entries[:3]
    with pytest.raises(PluginError, match="expected a JSON list of entries"):
        read_json_entries(path)  # not unwrapped without the key


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"{not json", "cannot read JSON"),
        (b"\x1f\x8b\x08\x00truncated", "cannot read JSON"),
        (b"PK\x03\x04broken", "cannot read JSON"),
        (b"[1, 2]", "expected a JSON list of entries"),
        (b'{"a": 1}', "expected a JSON list of entries"),
    ],
)
def test_read_json_entries_errors(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(PluginError, match=match):
        read_json_entries(path)
    with pytest.raises(PluginError, match="cannot read JSON"):
        read_json_entries(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(1, 1.0), (-0.71026, -0.71026), (" 2.5 ", 2.5), ("1e-3", 1e-3), (-99999, -99999.0)],
)
def test_parse_float_numbers(raw: Any, expected: float) -> None:
    assert parse_float(raw) == expected


@pytest.mark.parametrize("raw", [None, True, False, "na", "", [1.0], {"v": 1}, math.nan, "nan"])
def test_parse_float_missing(raw: Any) -> None:
    assert math.isnan(parse_float(raw))


def test_parse_float_sentinel() -> None:
    assert math.isnan(parse_float(-99999, missing=-99999.0))
    assert math.isnan(parse_float("-99999.0", missing=-99999.0))
    assert parse_float(-99998, missing=-99999.0) == -99998.0


def test_atoms_to_crystal_real_entry(jarvis_entries: list[dict[str, Any]]) -> None:
    entry = jarvis_entries[0]
    crystal = atoms_to_crystal(entry["atoms"], entry["jid"], "subset#" + entry["jid"])
    assert crystal.id == entry["jid"]
    assert len(crystal.numbers) == len(entry["atoms"]["elements"])
    bad = {**entry["atoms"], "elements": ["Xx"] * len(entry["atoms"]["elements"])}
    with pytest.raises(StructureError, match="Xx"):
        atoms_to_crystal(bad, entry["jid"], "subset")


# --------------------------------------------------------------------------------------
# Collecting
# --------------------------------------------------------------------------------------


class _Warn(UserWarning):
    pass


def _to_crystal(entry: Entry, sid: str, source: str) -> Any:
    return atoms_to_crystal(entry["atoms"], sid, source)


def test_collect_structures_skips_with_one_warning_per_kind(jarvis_entries: list[dict[str, Any]]) -> None:
    sample = [dict(e) for e in jarvis_entries[:20]]
    for e in sample[2:5]:
        e["atoms"] = {**e["atoms"], "elements": ["Xx"] * len(e["atoms"]["elements"])}
    sample[6]["atoms"] = {"coords": []}
    candidates = [(e["jid"], e) for e in sample] + [(sample[9]["jid"], sample[9]), (sample[1]["jid"], sample[1])]
    with pytest.warns(_Warn) as record:
        crystals, kept = collect_structures(candidates, _to_crystal, "subset.json", _Warn)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert messages[0].startswith("subset.json: skipped 4 entries whose structure could not be used")
    assert sample[2]["jid"] in messages[0] and sample[6]["jid"] in messages[0]
    assert messages[1].startswith("subset.json: 2 duplicate id(s), kept the first entry of each")
    assert sample[9]["jid"] in messages[1] and sample[1]["jid"] in messages[1]
    assert kept == [0, 1, 5, *range(7, 20)]
    assert [c.id for c in crystals] == [sample[k]["jid"] for k in kept]
    assert crystals[0].source == f"subset.json#{sample[0]['jid']}"
    # stacklevel=1 points at this line, the caller of collect_structures
    assert all(w.filename == __file__ for w in record)


def test_collect_structures_single_failure_wording_and_no_warning(jarvis_entries: list[dict[str, Any]]) -> None:
    good = [(e["jid"], e) for e in jarvis_entries[:5]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crystals, kept = collect_structures(good, _to_crystal, "s", _Warn)
    assert kept == list(range(5)) and len(crystals) == 5
    broken = dict(jarvis_entries[5], atoms={"coords": []})
    with pytest.warns(_Warn, match=r"skipped 1 entry whose"):
        _, kept = collect_structures([*good, (broken["jid"], broken)], _to_crystal, "s", _Warn)
    assert kept == list(range(5))


def test_collected_present(jarvis_entries: list[dict[str, Any]]) -> None:
    crystals = [_to_crystal(e, e["jid"], "s") for e in jarvis_entries[:3]]
    targets = np.array([[1.0, np.nan], [np.nan, np.nan], [2.0, 3.0]])
    got = Collected(crystals, targets, {})
    ids = [c.id for c in crystals]
    assert got.present(0) == {ids[0], ids[2]}
    assert got.present(1) == {ids[2]}


# --------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------


def _reference_split(total: int, seed: int, n_train: int, n_val: int, n_test: int) -> tuple[list[int], ...]:
    """jarvis-tools ``get_id_train_val_test`` as written there (global ``random``)."""
    ids = list(range(total))
    state = random.getstate()
    try:
        random.seed(seed)
        random.shuffle(ids)
    finally:
        random.setstate(state)
    return ids[:n_train], ids[-(n_val + n_test) : -n_test], ids[-n_test:]


@pytest.mark.parametrize("total", [10, 11, 97, 1076, 5450])
def test_seeded_split_matches_reference(total: int) -> None:
    n_train, n_val, n_test = int(0.8 * total), int(0.1 * total), int(0.1 * total)
    got = seeded_split(total)
    assert got == _reference_split(total, 123, n_train, n_val, n_test)
    assert tuple(map(len, got)) == (n_train, n_val, n_test)
    assert len(set().union(*map(set, got))) == n_train + n_val + n_test


def test_seeded_split_explicit_sizes_seed_and_global_rng() -> None:
    before = random.getstate()
    got = seeded_split(5450, split_seed=7, n_train=4664, n_val=393, n_test=393)
    assert random.getstate() == before  # the global generator is untouched
    assert got == _reference_split(5450, 7, 4664, 393, 393)
    assert seeded_split(5450, split_seed=7, n_train=4664, n_val=393, n_test=393) == got


def test_seeded_split_small_and_invalid() -> None:
    train, val, test = seeded_split(9)  # int(0.1 * 9) == 0: no test part, val is last 0
    assert (len(train), len(val), test) == (7, 0, [])
    train, val, test = seeded_split(5, n_train=3, n_val=2, n_test=0)
    assert test == [] and sorted(train + val) == list(range(5))
    with pytest.raises(ValueError, match="exceed"):
        seeded_split(10, n_train=8, n_val=2, n_test=1)


def test_ids_split() -> None:
    ids = ["a", "b", "c", "d"]
    assert ids_split(ids, ([3, 0], [1], [2])) == {"train": ["d", "a"], "val": ["b"], "test": ["c"]}


def test_restrict_split_precedence_and_order() -> None:
    split = {"train": ["x1", "x2", "x3", "x4"], "val": ["x5", "x2"], "test": ["x3", "x6", "x2"]}
    got = restrict_split(split, {"x1", "x2", "x3", "x5", "x6", "y"})
    assert got == {"train": ["x1"], "val": ["x5"], "test": ["x3", "x6", "x2"]}
    assert list(got) == list(PARTS)
    assert restrict_split({"train": ["a"]}, {"a"}) == {"train": ["a"], "val": [], "test": []}


def test_encode_decode_ids_roundtrip() -> None:
    ids = ["JVASP-10", "mp-0", "JVASP-2", "mvc-33", "mp-149", "JVASP-1002", "x-007", "odd", "y-"]
    blob = encode_ids(ids)
    # a leading zero stays in the prefix ("x-00" + 7), so every id round-trips
    assert blob == {
        "numbered": {"JVASP-": [2, 8, 992], "mp-": [0, 149], "mvc-": [33], "x-00": [7]},
        "other": ["odd", "y-"],
    }
    assert sorted(decode_ids(blob)) == sorted(ids)
    assert decode_ids(json.loads(json.dumps(blob))) == [
        "JVASP-2", "JVASP-10", "JVASP-1002", "mp-0", "mp-149", "mvc-33", "x-007", "odd", "y-",
    ]


def test_read_leaderboard_real_zip(board: Path) -> None:
    split = read_leaderboard(board / "dft_3d_exfoliation_energy.json.zip")
    assert list(split) == list(PARTS)
    assert all(sid.startswith("JVASP-") for part in PARTS for sid in split[part])
    with zipfile.ZipFile(board / "dft_3d_exfoliation_energy.json.zip") as zf:
        raw = json.loads(zf.read(zf.namelist()[0]))
    assert {part: len(split[part]) for part in PARTS} == {part: len(raw[part]) for part in PARTS}


def test_build_and_read_split_file(board: Path, tmp_path: Path) -> None:
    files = {
        "formation_energy": "dft_3d_formation_energy_peratom.json.zip",
        "total_energy": "dft_3d_optb88vdw_total_energy.json.zip",
        "exfoliation_energy": "dft_3d_exfoliation_energy.json.zip",
        "mp_gap": "megnet_gappbe.json.zip",
    }
    out = tmp_path / "splits.json.gz"
    sizes = build_split_file(board, out, files, "test source")
    assert sizes["mp_gap"] == {"train": 60000, "val": 5000, "test": 4239}
    doc = json.loads(gzip.decompress(out.read_bytes()))
    assert doc["format"] == SPLIT_FORMAT and doc["source"] == "test source"
    # identical splits share the table named after the first zip
    assert doc["properties"]["total_energy"] == doc["properties"]["formation_energy"]
    assert len(doc["tables"]) == 3
    got = read_split_file(out)
    for prop, fname in files.items():
        ref = read_leaderboard(board / fname)
        assert {p: sorted(got[prop][p]) for p in PARTS} == {p: sorted(ref[p]) for p in PARTS}
    again = tmp_path / "again.json.gz"
    build_split_file(board, again, files, "test source")
    assert again.read_bytes() == out.read_bytes()  # deterministic bytes (mtime=0)


def test_read_split_file_rejects_other_format(tmp_path: Path) -> None:
    path = tmp_path / "other.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"format": "something/2"}).encode()))
    with pytest.raises(ValueError, match="not a recinet-split-ids/1 file"):
        read_split_file(path)


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable package ``recinet_fake_splits`` with an empty ``data`` folder."""
    root = tmp_path / "site" / "recinet_fake_splits"
    (root / "data").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return root


def test_shipped_splits_build_read_and_main(
    board: Path, fake_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {"formation_energy": "megnet_e_form.json.zip", "bandgap": "megnet_gappbe.json.zip"}
    table = ShippedSplits("recinet_fake_splits", "mp.json.gz", files, "fake source", usage_note="NOTE")
    assert table.default_out() == fake_package / "data" / "mp.json.gz"
    # main with no OUT rewrites the package-data file
    assert table.main([str(board)]) == 0
    printed = capsys.readouterr().out
    assert "formation_energy: 60000/5000/4239" in printed and "wrote" in printed
    shipped = table.read()
    assert shipped is table.read()  # cached
    assert shipped == read_package_splits("recinet_fake_splits", "mp.json.gz")
    assert shipped["formation_energy"] == shipped["bandgap"]
    # build with the defaults gives the same bytes; an explicit source changes them
    out = tmp_path / "copy.json.gz"
    assert table.build(board, out) == {p: {"train": 60000, "val": 5000, "test": 4239} for p in files}
    assert out.read_bytes() == table.default_out().read_bytes()
    table.build(board, out, source="other")
    assert out.read_bytes() != table.default_out().read_bytes()
    # usage error
    assert table.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("NOTE\n") and "usage: python -m recinet_fake_splits.splits" in err


# --------------------------------------------------------------------------------------
# The plugin base class
# --------------------------------------------------------------------------------------

_PROPS = (
    EntryProperty("formation_energy", "eV/atom", "formation_energy_peratom", "formation energy", ("ef",)),
    EntryProperty("exfoliation_energy", "meV/atom", "exfoliation_energy", "exfoliation energy"),
)


class _SubsetDataset(JsonEntriesDataset[EntryProperty]):
    """The smallest concrete subclass: labels by key, the leaderboard split field as split."""

    name = "subset_test"
    dataset_version = "test"
    remote = RemoteFile(name="subset-test.json.gz", url="http://127.0.0.1:9/none")
    member = "unused.json"
    property_defs = _PROPS

    def _collect(self, entries: Sequence[Entry], props: Sequence[EntryProperty], source: str) -> Collected:
        table = [[parse_float(e.get(p.key)) for p in props] for e in entries]
        rows = [i for i, r in enumerate(table) if not all(math.isnan(v) for v in r)]
        crystals, kept = collect_structures(
            [(entries[i]["jid"], entries[i]) for i in rows], _to_crystal, source, _Warn, stacklevel=3
        )
        targets = np.asarray([table[rows[k]] for k in kept], dtype=np.float64).reshape(len(kept), len(props))
        labelled = {p.name: [e["jid"] for e in entries if not math.isnan(parse_float(e.get(p.key)))] for p in props}
        return Collected(crystals, targets, labelled)

    def _splits(self, collected: Collected, props: Sequence[EntryProperty], source: str) -> dict[str, Split]:
        return {p.name: ids_split(collected.labelled[p.name], seeded_split(len(collected.labelled[p.name]))) for p in props}


def test_json_entries_dataset_load_real_subset(jarvis_entries: list[dict[str, Any]]) -> None:
    ds = _SubsetDataset()
    assert [(i.name, i.unit, i.aliases, i.size) for i in ds.properties()] == [
        ("formation_energy", "eV/atom", ("ef",), None),
        ("exfoliation_energy", "meV/atom", (), None),
    ]
    got = ds.load(["ef", "exfoliation_energy"], data=shared_path(*SUBSET))
    assert isinstance(got, DatasetSplit)
    assert got.targets.shape == (len(got.structures), 2) == (len(jarvis_entries), 2)
    first = jarvis_entries[0]
    assert got.structures[0].id == first["jid"]
    assert got.targets[0, 0] == first["formation_energy_peratom"]
    n_exf = sum(parse_float(e["exfoliation_energy"]) == parse_float(e["exfoliation_energy"]) for e in jarvis_entries)
    assert int(np.isfinite(got.targets[:, 1]).sum()) == n_exf == len(jarvis_entries) - 931
    assert sum(map(len, got.property_splits["exfoliation_energy"].values())) == int(0.8 * n_exf) + 2 * int(0.1 * n_exf)


def test_json_entries_dataset_warning_points_at_load_caller(
    jarvis_entries: list[dict[str, Any]], tmp_path: Path
) -> None:
    sample = [dict(e) for e in jarvis_entries[:10]]
    sample[3]["atoms"] = {"coords": []}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(sample))
    with pytest.warns(_Warn, match=r"bad\.json: skipped 1 entry") as record:
        got = _SubsetDataset().load(["formation_energy"], data=path)
    assert record[0].filename == __file__
    assert len(got.structures) == 9


def test_json_entries_dataset_rejects_bad_requests() -> None:
    ds = _SubsetDataset()
    with pytest.raises(PluginError, match="--fold is not supported"):
        ds.load(["formation_energy"], fold=0)
    with pytest.raises(PluginError, match="no property requested"):
        ds.load([])
    with pytest.raises(PluginError, match="'formation_energy' requested more than once"):
        ds.load(["formation_energy", "ef"])
    with pytest.raises(PluginError, match="has no property 'bandgap'"):
        ds.load(["bandgap"])
