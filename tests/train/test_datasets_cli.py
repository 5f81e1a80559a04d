"""``recinet datasets``: every installed dataset plugin's properties, units and sizes."""

from __future__ import annotations

import json

import pytest

from recinet_cli import registry
from recinet_cli.cli.datasets import COLUMNS
from tests.train.helpers import invoke


def installed_datasets() -> list[str]:
    return sorted(registry.discover("recinet.datasets"))


def test_json_lists_every_installed_dataset_with_property_unit_size() -> None:
    res = invoke(["datasets", "--json"])
    assert res.exit_code == 0, res.output
    assert res.stderr == ""
    rows = json.loads(res.stdout)
    assert rows and all(set(r) == set(COLUMNS) for r in rows)
    assert {"property", "unit", "size"} <= set(COLUMNS)
    assert sorted({r["dataset"] for r in rows}) == installed_datasets()
    by_ds = {name: [r for r in rows if r["dataset"] == name] for name in installed_datasets()}
    # the built-ins take their properties from the user's data
    assert by_ds["folder"] == [{"dataset": "folder", "version": "local", "property": "<column>", "unit": "",
                                "size": None, "aliases": "", "description": "any property column of DIR/id_prop.csv"}]
    assert [r["property"] for r in by_ds["h5"]] == ["<target>"] and by_ds["h5"][0]["size"] is None
    for r in rows:
        assert isinstance(r["property"], str) and r["property"]
        assert isinstance(r["unit"], str)
        assert r["size"] is None or (isinstance(r["size"], int) and r["size"] > 0)
    # each plugin's rows are exactly its properties, in its order
    for name, ds_rows in by_ds.items():
        plugin = registry.get_dataset(name)
        props = plugin.properties()
        assert [(r["property"], r["unit"], r["size"]) for r in ds_rows] == [(p.name, p.unit, p.size) for p in props]
        assert all(r["version"].startswith(plugin.dataset_version) for r in ds_rows)


def test_jarvis_rows_when_the_plugin_is_installed() -> None:
    if "jarvis" not in installed_datasets():
        pytest.skip("the recinet-jarvis plugin is not installed")
    rows = {r["property"]: r for r in json.loads(invoke(["datasets", "--json"]).stdout) if r["dataset"] == "jarvis"}
    assert rows["formation_energy"]["unit"] == "eV/atom"
    assert rows["bandgap_opt"]["unit"] == "eV"
    assert "optb88vdw_bandgap" in rows["bandgap_opt"]["aliases"].split(", ")
    assert rows["bandgap_mbj"]["size"] < rows["bandgap_opt"]["size"]


def test_table_output() -> None:
    res = invoke(["datasets"])
    assert res.exit_code == 0, res.output
    assert "recinet train --task DATASET:PROP" in res.stdout
    for name in installed_datasets():
        assert name in res.stdout


def test_a_broken_plugin_does_not_hide_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry.get_dataset

    def flaky(name: str) -> object:
        if name == "h5":
            raise RuntimeError("cannot reach the server")
        return real(name)

    monkeypatch.setattr(registry, "get_dataset", flaky)
    res = invoke(["datasets", "--json"])
    assert res.exit_code == 0, res.output
    assert res.stderr.strip() == "error: dataset plugin 'h5': cannot reach the server"
    names = {r["dataset"] for r in json.loads(res.stdout)}
    assert names == set(installed_datasets()) - {"h5"}


def test_plugin_filter_restricts_the_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECINET_PLUGINS", "folder")
    res = invoke(["datasets", "--json"])
    assert res.exit_code == 0, res.output
    assert {r["dataset"] for r in json.loads(res.stdout)} == {"folder"}
