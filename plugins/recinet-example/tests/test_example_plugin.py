"""The ``example`` dataset plugin: discovery, properties, loading, split, and a real run.

These tests are the template for a plugin's own tests: they check the contract through the
registry (as ``recinet`` sees the plugin), the data the plugin ships, and one real
``recinet train`` run of one epoch on it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from recinet_example import PROPERTIES, ExampleDataset
from typer.testing import CliRunner

from recinet_cli.cli.app import app
from recinet_cli.contracts import DATASETS_GROUP, DatasetSplit
from recinet_cli.errors import PluginError
from recinet_cli.registry import clear_cache, discover, get_dataset
from recinet_cli.structures.crystal import validate_crystal
from recinet_cli.structures.graph import build_graph

N = 100
SIZES = {"train": 80, "val": 10, "test": 10}


@pytest.fixture(scope="module")
def loaded() -> DatasetSplit:
    """All three properties, loaded once."""
    return ExampleDataset().load([p.name for p in PROPERTIES])


def test_entry_point_is_discovered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECINET_PLUGINS", raising=False)
    clear_cache()
    entry = discover(DATASETS_GROUP)["example"]
    assert (entry.distribution, entry.value) == ("recinet-example", "recinet_example:ExampleDataset")
    assert entry.description.startswith("Example plugin")
    assert isinstance(get_dataset("example"), ExampleDataset)


def test_properties_units_aliases() -> None:
    ds = ExampleDataset()
    props = {p.name: p for p in ds.properties()}
    assert {name: p.unit for name, p in props.items()} == {
        "exfoliation_energy": "meV/atom",
        "bandgap_opt": "eV",
        "formation_energy": "eV/atom",
    }
    assert all(p.size == N for p in props.values())
    assert ds.property_info("e_exf").name == "exfoliation_energy"
    assert ds.property_info("BandGap").name == "bandgap_opt"  # case-insensitive fallback
    with pytest.raises(PluginError, match="valid: exfoliation_energy, bandgap_opt, formation_energy"):
        ds.property_info("ehull")


def test_load_structures_and_targets(loaded: DatasetSplit) -> None:
    assert (loaded.name, loaded.version) == ("example", ExampleDataset.dataset_version)
    assert loaded.property_names == ("exfoliation_energy", "bandgap_opt", "formation_energy")
    assert len(loaded.structures) == N and loaded.targets.shape == (N, 3)
    assert np.isfinite(loaded.targets).all()
    ids = [c.id for c in loaded.structures]
    assert len(set(ids)) == N and all(i.startswith("JVASP-") for i in ids)
    # Real values: exfoliation energies are positive meV/atom, gaps are >= 0 eV.
    assert (loaded.targets[:, 0] > 0).all() and (loaded.targets[:, 1] >= 0).all()
    # The Cartesian -> fractional conversion reproduces the file's positions.
    first = json.loads(_bundled_lines()[0])
    crystal = loaded.structures[0]
    assert crystal.id == first["id"]
    np.testing.assert_allclose(crystal.lattice, first["lattice"])
    cart = np.asarray(first["cart"])
    wrapped = crystal.cart  # fractional coordinates are wrapped into [0, 1)
    frac_delta = np.linalg.solve(crystal.lattice.T, (wrapped - cart).T).T
    np.testing.assert_allclose(frac_delta, np.round(frac_delta), atol=1e-9)


def test_every_structure_is_valid_and_makes_a_graph(loaded: DatasetSplit) -> None:
    for crystal in loaded.structures:
        validate_crystal(crystal)
        graph = build_graph(crystal.lattice, crystal.frac)
        assert graph.n_edges >= 2 * 16 * crystal.n_atoms  # 16 neighbours, both directions


def test_split_is_fixed_and_disjoint(loaded: DatasetSplit) -> None:
    split = loaded.split
    assert {k: len(v) for k, v in split.items()} == SIZES
    assert set().union(*map(set, split.values())) == {c.id for c in loaded.structures}
    again = ExampleDataset().load(["bandgap_opt"]).split
    assert again == split


def test_aliases_order_and_local_copy(tmp_path: Path) -> None:
    lines = _bundled_lines()[:12]
    row = json.loads(lines[0])
    row["bandgap_opt"] = None  # a missing label becomes NaN
    lines[0] = json.dumps(row)
    local = tmp_path / "mine.jsonl"
    local.write_text("\n".join(lines) + "\n")
    ds = ExampleDataset().load(["optb88vdw_bandgap", "e_exf"], data=local)
    assert ds.property_names == ("bandgap_opt", "exfoliation_energy")
    assert ds.targets.shape == (12, 2)
    assert math.isnan(ds.targets[0, 0]) and ds.targets[0, 1] == row["exfoliation_energy"]


def test_user_errors(tmp_path: Path) -> None:
    ds = ExampleDataset()
    with pytest.raises(PluginError, match="one fixed split"):
        ds.load(["bandgap_opt"], fold=1)
    with pytest.raises(PluginError, match="cannot read"):
        ds.load(["bandgap_opt"], data=tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "lattice": [1, 2], "elements": [], "cart": [], "split": "train"}\n')
    with pytest.raises(PluginError, match=r"bad.jsonl:1: malformed structure"):
        ds.load(["bandgap_opt"], data=bad)


def test_preset() -> None:
    assert ExampleDataset().preset(["exfoliation_energy"]) == {"blocks": 3, "epochs": 300, "lr": 1e-3}


@pytest.mark.slow
def test_recinet_train_one_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real ``recinet train --task example:exfoliation_energy`` run (tiny model, 1 epoch)."""
    monkeypatch.delenv("RECINET_PLUGINS", raising=False)
    clear_cache()
    run = tmp_path / "run"
    args = ["train", "--task", "example:exfoliation_energy", "--epochs", "1", "--blocks", "1",
            "--hidden", "32", "--batch-size", "16", "--no-register", "-o", str(run)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((run / "data.json").read_text())
    results = json.loads((run / "results.json").read_text())
    assert (data["dataset"], data["split"], data["sizes"]) == ("example", "official", SIZES)
    assert results["task"] == "example:exfoliation_energy" and results["units"] == ["meV/atom"]
    test = results["test"]["exfoliation_energy"]
    assert test["n"] == SIZES["test"] and math.isfinite(test["mae"])
    assert (run / "model.safetensors").is_file()
    assert (run / "test_predictions.csv").read_text().count("\n") == SIZES["test"] + 1


def _bundled_lines() -> list[str]:
    from importlib.resources import files

    return files("recinet_example").joinpath("data", "jarvis2d_sample.jsonl").read_text().splitlines()
