"""Tests for the plugin contracts, the entry-point registry and ``recinet plugins``.

Fake plugins are real :class:`importlib.metadata.EntryPoint` objects pointing at a module
registered in ``sys.modules``; ``recinet_cli.registry.entry_points`` is monkeypatched to
return them, so nothing here depends on what happens to be installed (except the last
tests, which check the real built-in datasets).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import recinet_cli
from recinet_cli import registry
from recinet_cli.contracts import (
    DATASETS_GROUP,
    HEADS_GROUP,
    DatasetPlugin,
    DatasetSplit,
    HeadPlugin,
    PropertyInfo,
)
from recinet_cli.errors import PluginError
from recinet_cli.registry import RecinetPluginWarning

FAKE_MOD = "tests_fake_plugins_mod"
BROKEN_MOD = "tests_fake_broken_plugin_mod"
MISSING_MOD = "tests_fake_missing_plugin_mod_does_not_exist"


# --------------------------------------------------------------------------- fake plugins


class GoodDataset(DatasetPlugin):
    name = "good"
    description = "A good fake dataset"
    dataset_version = "2024.1"

    def properties(self) -> list[PropertyInfo]:
        return [
            PropertyInfo("formation_energy", "eV/atom", aliases=("ef", "e_form")),
            PropertyInfo("band_gap", "eV", "Kohn-Sham gap"),
        ]

    def load(
        self, props: Sequence[str], *, data: Path | None = None, fold: int | None = None
    ) -> DatasetSplit:
        raise NotImplementedError


class OtherDataset(GoodDataset):
    name = "other"
    description = "Another fake dataset"


class RivalDataset(GoodDataset):
    name = "rival"
    description = "Competes for a name"


class AbstractDataset(DatasetPlugin):
    """Forgets to implement ``load``."""

    name = "abstract"

    def properties(self) -> list[PropertyInfo]:
        return []


class NotAPlugin:
    name = "notaplugin"


@dataclass(frozen=True)
class MlpOptions:
    hidden: int = 64
    dropout: float = 0.0


class GoodHead(HeadPlugin):
    name = "mlp"
    description = "A fake MLP head"
    Options = MlpOptions

    def build(self, in_dim: int, targets: Sequence[str], options: object) -> object:
        raise NotImplementedError


class PlainHead(HeadPlugin):
    name = "plain"

    def build(self, in_dim: int, targets: Sequence[str], options: object) -> object:
        raise NotImplementedError


FAKE_CLASSES = (
    GoodDataset,
    OtherDataset,
    RivalDataset,
    AbstractDataset,
    NotAPlugin,
    GoodHead,
    PlainHead,
)


def _ep(
    name: str,
    attr: str,
    group: str = DATASETS_GROUP,
    *,
    dist: str | None = None,
    module: str = FAKE_MOD,
) -> EntryPoint:
    """A real EntryPoint, optionally attached to a fake distribution."""
    ep = EntryPoint(name=name, value=f"{module}:{attr}", group=group)
    if dist is not None:
        # What importlib.metadata itself does (EntryPoint._for) to attach the distribution.
        vars(ep).update(dist=SimpleNamespace(name=dist, version="9.9"))
    return ep


class FakeEntryPoints:
    """Stand-in for ``importlib.metadata.entry_points`` that counts its calls."""

    def __init__(self) -> None:
        self.by_group: dict[str, list[EntryPoint]] = {}
        self.calls: list[str] = []

    def set(self, *eps: EntryPoint) -> None:
        self.by_group = {}
        for ep in eps:
            self.by_group.setdefault(ep.group, []).append(ep)

    def __call__(self, *, group: str) -> list[EntryPoint]:
        self.calls.append(group)
        return list(self.by_group.get(group, []))


@pytest.fixture(autouse=True)
def _clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with an empty cache and no RECINET_PLUGINS."""
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    registry.clear_cache()
    yield
    registry.clear_cache()


@pytest.fixture
def fake_eps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeEntryPoints:
    """Register the fake plugin module, a module that raises on import, and the fake."""
    module = ModuleType(FAKE_MOD)
    for cls in FAKE_CLASSES:
        setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, FAKE_MOD, module)
    (tmp_path / f"{BROKEN_MOD}.py").write_text('raise RuntimeError("boom at import")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, BROKEN_MOD, raising=False)
    fake = FakeEntryPoints()
    monkeypatch.setattr(registry, "entry_points", fake)
    return fake


def _plugin_warnings(fn: Callable[[], object]) -> tuple[object, list[str]]:
    """Run ``fn`` and return its result and the RecinetPluginWarning messages it emitted."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in record if w.category is RecinetPluginWarning]


# ----------------------------------------------------------------------------- discovery


def test_broken_plugins_warn_and_others_still_load(fake_eps: FakeEntryPoints) -> None:
    fake_eps.set(
        _ep("good", "GoodDataset", dist="recinet-good"),
        _ep("missing", "Cls", module=MISSING_MOD, dist="recinet-missing"),
        _ep("broken", "Cls", module=BROKEN_MOD, dist="recinet-broken"),
        _ep("notaplugin", "NotAPlugin", dist="recinet-bad"),
        _ep("wronggroup", "GoodHead", dist="recinet-bad"),
        _ep("abstract", "AbstractDataset", dist="recinet-bad"),
        _ep("noattr", "NoSuchClass", dist="recinet-bad"),
        _ep("other", "OtherDataset"),
    )
    found, messages = _plugin_warnings(lambda: registry.discover(DATASETS_GROUP))

    assert set(found) == {"good", "other"}
    assert found["good"].obj is GoodDataset
    assert found["good"].distribution == "recinet-good"
    assert found["good"].version == "9.9"
    assert found["other"].distribution == "unknown"
    assert found["other"].version == ""
    assert len(messages) == 6, messages

    def one(name: str) -> str:
        hits = [m for m in messages if f"recinet plugin {name!r}" in m]
        assert len(hits) == 1, (name, messages)
        return hits[0]

    assert one("missing") == (
        f"recinet plugin 'missing' (recinet-missing) failed to load: "
        f"ModuleNotFoundError: No module named {MISSING_MOD!r}"
    )
    assert one("broken") == (
        "recinet plugin 'broken' (recinet-broken) failed to load: RuntimeError: boom at import"
    )
    assert "AttributeError" in one("noattr")
    assert "not a DatasetPlugin subclass" in one("notaplugin")
    assert "not a DatasetPlugin subclass" in one("wronggroup")
    assert "does not implement load" in one("abstract")


def test_heads_group_checks_the_head_contract(fake_eps: FakeEntryPoints) -> None:
    fake_eps.set(
        _ep("mlp", "GoodHead", HEADS_GROUP),
        _ep("good", "GoodDataset", HEADS_GROUP),
    )
    found, messages = _plugin_warnings(lambda: registry.discover(HEADS_GROUP))
    assert set(found) == {"mlp"}
    assert len(messages) == 1 and "not a HeadPlugin subclass" in messages[0]


def test_duplicate_name_warns_and_keeps_first_by_distribution(
    fake_eps: FakeEntryPoints,
) -> None:
    fake_eps.set(
        _ep("dup", "RivalDataset", dist="zzz-plugins"),
        _ep("dup", "OtherDataset", dist="aaa-plugins"),
    )
    found, messages = _plugin_warnings(lambda: registry.discover(DATASETS_GROUP))
    assert found["dup"].obj is OtherDataset
    assert found["dup"].distribution == "aaa-plugins"
    assert len(messages) == 1
    assert "'dup'" in messages[0]
    assert "aaa-plugins" in messages[0] and "zzz-plugins" in messages[0]


def test_builtin_distribution_wins_name_clash(fake_eps: FakeEntryPoints) -> None:
    fake_eps.set(
        _ep("dup", "RivalDataset", dist="aaa-plugins"),
        _ep("dup", "GoodDataset", dist="recinet"),
    )
    found, messages = _plugin_warnings(lambda: registry.discover(DATASETS_GROUP))
    assert found["dup"].obj is GoodDataset
    assert found["dup"].distribution == "recinet"
    assert len(messages) == 1 and "aaa-plugins" in messages[0]


def test_duplicate_loser_is_not_imported(fake_eps: FakeEntryPoints) -> None:
    fake_eps.set(
        _ep("dup", "GoodDataset", dist="aaa"),
        _ep("dup", "Cls", module=BROKEN_MOD, dist="bbb"),
    )
    found, messages = _plugin_warnings(lambda: registry.discover(DATASETS_GROUP))
    assert found["dup"].obj is GoodDataset
    assert len(messages) == 1 and "failed to load" not in messages[0]
    assert BROKEN_MOD not in sys.modules


def test_unknown_name_lists_installed(fake_eps: FakeEntryPoints) -> None:
    fake_eps.set(_ep("other", "OtherDataset"), _ep("good", "GoodDataset"))
    with pytest.raises(PluginError) as info:
        registry.get_dataset("foo")
    message = str(info.value)
    assert message == (
        "unknown dataset 'foo'; installed: good, other "
        "(install more with pip install recinet-<name>)"
    )
    with pytest.raises(PluginError, match=r"unknown head 'foo'; installed: none"):
        registry.get_head("foo")


def test_get_returns_instances(fake_eps: FakeEntryPoints) -> None:
    fake_eps.set(_ep("good", "GoodDataset"), _ep("mlp", "GoodHead", HEADS_GROUP))
    dataset = registry.get_dataset("good")
    head = registry.get_head("mlp")
    assert type(dataset) is GoodDataset
    assert type(head) is GoodHead


def test_list_plugins_covers_both_groups(fake_eps: FakeEntryPoints) -> None:
    fake_eps.set(
        _ep("plain", "PlainHead", HEADS_GROUP),
        _ep("other", "OtherDataset"),
        _ep("mlp", "GoodHead", HEADS_GROUP),
        _ep("good", "GoodDataset"),
    )
    listed = [(e.kind, e.name, e.description) for e in registry.list_plugins()]
    assert listed == [
        ("dataset", "good", "A good fake dataset"),
        ("dataset", "other", "Another fake dataset"),
        ("head", "mlp", "A fake MLP head"),
        ("head", "plain", ""),
    ]


def test_unknown_group_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown plugin group"):
        registry.discover("something.else")


# ------------------------------------------------------------------------ RECINET_PLUGINS


def test_env_var_restricts_loading(
    fake_eps: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_eps.set(
        _ep("good", "GoodDataset"),
        _ep("other", "OtherDataset"),
        _ep("broken", "Cls", module=BROKEN_MOD),
    )
    monkeypatch.setenv(registry.ENV_VAR, " good , mlp,")
    found, messages = _plugin_warnings(lambda: registry.discover(DATASETS_GROUP))
    assert set(found) == {"good"}
    assert messages == []  # the broken plugin was not even imported
    assert BROKEN_MOD not in sys.modules
    with pytest.raises(PluginError, match="RECINET_PLUGINS"):
        registry.get_dataset("other")


def test_env_var_empty_loads_nothing(
    fake_eps: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_eps.set(_ep("good", "GoodDataset"))
    monkeypatch.setenv(registry.ENV_VAR, "")
    assert registry.discover(DATASETS_GROUP) == {}


def test_env_var_is_read_at_discovery_time(
    fake_eps: FakeEntryPoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_eps.set(_ep("good", "GoodDataset"), _ep("other", "OtherDataset"))
    assert set(registry.discover(DATASETS_GROUP)) == {"good", "other"}
    monkeypatch.setenv(registry.ENV_VAR, "other")
    assert set(registry.discover(DATASETS_GROUP)) == {"other"}


# ---------------------------------------------------------------------------------- cache


def test_entry_points_read_once_until_cache_cleared(fake_eps: FakeEntryPoints) -> None:
    fake_eps.set(_ep("good", "GoodDataset"))
    assert set(registry.discover(DATASETS_GROUP)) == {"good"}
    fake_eps.set(_ep("good", "GoodDataset"), _ep("other", "OtherDataset"))
    assert set(registry.discover(DATASETS_GROUP)) == {"good"}  # cached
    registry.get_dataset("good")
    assert fake_eps.calls == [DATASETS_GROUP]

    registry.clear_cache()
    assert set(registry.discover(DATASETS_GROUP)) == {"good", "other"}
    assert fake_eps.calls == [DATASETS_GROUP, DATASETS_GROUP]


def test_discover_returns_a_copy(fake_eps: FakeEntryPoints) -> None:
    fake_eps.set(_ep("good", "GoodDataset"))
    registry.discover(DATASETS_GROUP).clear()
    assert set(registry.discover(DATASETS_GROUP)) == {"good"}


def test_import_is_side_effect_free_and_torch_free() -> None:
    src = str(Path(recinet_cli.__file__).resolve().parents[1])
    code = (
        "import sys, importlib.metadata as md\n"
        "def boom(**kw): raise SystemExit('entry_points called at import')\n"
        "md.entry_points = boom\n"
        "import recinet_cli.registry, recinet_cli.contracts, recinet_cli.cli.plugins\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------ contracts


def test_parse_options_builds_the_options_dataclass() -> None:
    assert GoodHead.parse_options({"hidden": 32}) == MlpOptions(hidden=32, dropout=0.0)
    assert GoodHead.parse_options({}) == MlpOptions()
    assert PlainHead.parse_options({}) == PlainHead.Options()


def test_parse_options_rejects_unknown_keys() -> None:
    with pytest.raises(PluginError) as info:
        GoodHead.parse_options({"hidden": 32, "hiden": 3, "depth": 2})
    message = str(info.value)
    assert "'hiden'" in message and "'depth'" in message
    assert "'hidden'" not in message.split(";")[0]
    assert "valid: hidden, dropout" in message
    with pytest.raises(PluginError, match=r"unknown option\(s\) 'x'; valid: none"):
        PlainHead.parse_options({"x": 1})


def test_parse_options_reports_missing_required() -> None:
    @dataclass(frozen=True)
    class Required:
        width: int

    class NeedsWidth(PlainHead):
        name = "needs"
        Options = Required

    with pytest.raises(PluginError, match="missing required option.*'width'"):
        NeedsWidth.parse_options({})
    assert NeedsWidth.parse_options({"width": 3}) == Required(3)


def test_property_info_resolves_names_and_aliases() -> None:
    dataset = GoodDataset()
    assert dataset.property_info("formation_energy").name == "formation_energy"
    assert dataset.property_info("ef").name == "formation_energy"
    assert dataset.property_info("e_form").unit == "eV/atom"
    assert dataset.property_info("BAND_GAP").name == "band_gap"
    with pytest.raises(PluginError) as info:
        dataset.property_info("nope")
    assert str(info.value) == (
        "dataset 'good' has no property 'nope'; valid: formation_energy, band_gap"
    )


def test_dataset_split_checks_shapes() -> None:
    props = tuple(GoodDataset().properties())
    structures = ["a", "b", "c"]  # stand-ins; DatasetSplit only counts them
    split = DatasetSplit("good", "1", structures, np.zeros((3, 2)), props, {"train": ["a"]})
    assert split.property_names == ("formation_energy", "band_gap")
    with pytest.raises(PluginError, match=r"shape \(3, 1\), expected \(3, 2\)"):
        DatasetSplit("good", "1", structures, np.zeros((3, 1)), props, {})
    with pytest.raises(PluginError, match="unknown split key"):
        DatasetSplit("good", "1", structures, np.zeros((3, 2)), props, {"valid": []})


# ------------------------------------------------------------------------------------ CLI


def _local_app() -> typer.Typer:
    """A Typer app with only the plugins command (independent of the rest of the CLI)."""
    from recinet_cli.cli.plugins import plugins

    app = typer.Typer()
    app.command("plugins")(plugins)

    @app.command("noop")
    def _noop() -> None:  # a second command so Typer keeps the "plugins" subcommand
        """Do nothing."""

    return app


def test_plugins_command_with_fakes(fake_eps: FakeEntryPoints) -> None:
    fake_eps.set(
        _ep("good", "GoodDataset", dist="recinet-good"), _ep("mlp", "GoodHead", HEADS_GROUP)
    )
    runner = CliRunner()
    result = runner.invoke(_local_app(), ["plugins"])
    assert result.exit_code == 0, result.output
    for text in ("good", "mlp", "dataset", "head", "recinet-good", "9.9", "A good fake dataset"):
        assert text in result.stdout

    registry.clear_cache()
    result = runner.invoke(_local_app(), ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows == [
        {
            "kind": "dataset",
            "name": "good",
            "distribution": "recinet-good",
            "version": "9.9",
            "description": "A good fake dataset",
        },
        {
            "kind": "head",
            "name": "mlp",
            "distribution": "unknown",
            "version": "",
            "description": "A fake MLP head",
        },
    ]


def test_plugins_command_lists_builtin_datasets() -> None:
    from recinet_cli.cli.app import app

    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "folder" in result.stdout
    assert "h5" in result.stdout


def test_plugins_command_json_lists_builtin_datasets() -> None:
    from recinet_cli.cli.app import app

    result = CliRunner().invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    builtins = {
        row["name"]: row
        for row in rows
        if row["kind"] == "dataset" and row["distribution"] == "recinet"
    }
    assert {"folder", "h5"} <= set(builtins)
