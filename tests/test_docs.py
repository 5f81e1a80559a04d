"""The documentation site: generated pages are current, every command is documented, the
site builds with ``mkdocs build --strict``, and the example plugin works.

The generated pages (``docs/cli.md`` from the Typer app, ``docs/plugin-tables.md`` from the
plugin registry) are checked in; when a command, option, help text or plugin changes, the
first test fails and says how to regenerate them.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from recinet_cli import docgen, registry
from tests.conftest import ROOT

DOCS = ROOT / "docs"


@pytest.fixture
def all_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every installed plugin visible to the registry (no RECINET_PLUGINS filter)."""
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    registry.clear_cache()
    yield
    registry.clear_cache()


@pytest.mark.parametrize("name", sorted(docgen.GENERATED))
def test_generated_page_is_current(name: str, all_plugins: None) -> None:
    path = DOCS / name
    assert path.is_file(), f"docs/{name} is missing: generate it with `{docgen.REGENERATE}`"
    expected = docgen.GENERATED[name]()
    assert path.read_text(encoding="utf-8") == expected, (
        f"docs/{name} is stale: regenerate it with `{docgen.REGENERATE}` and commit the result"
    )


def test_check_mode_names_the_stale_file(tmp_path: Path, all_plugins: None) -> None:
    docgen.write(tmp_path)
    assert docgen.main(["--check", "--docs", str(tmp_path)]) == 0
    stale = tmp_path / "cli.md"
    stale.write_text(stale.read_text().replace("## `recinet train`", "## `recinet train-old`"))
    problems = docgen.check(tmp_path)
    assert problems == [f"docs/cli.md is stale: regenerate it with `{docgen.REGENERATE}`"]
    assert docgen.main(["--check", "--docs", str(tmp_path)]) == 1


def test_every_command_is_in_the_reference() -> None:
    reference = docgen.cli_reference()
    paths = [path for path, _cmd, _ctx in docgen.iter_commands()]
    top = {p.split()[1] for p in paths if p.count(" ") >= 1}
    assert {"featurize", "train", "predict", "export", "datasets", "plugins", "models", "bench"} <= top
    assert {"recinet models list", "recinet models show", "recinet models remove"} <= set(paths)
    for path, cmd, ctx in docgen.iter_commands():
        assert f"`{path}`\n" in reference, f"{path} has no section in the CLI reference"
        for param in cmd.get_params(ctx):
            if param.hidden or "--help" in getattr(param, "opts", ()):
                continue
            first = (param.opts or [param.name])[0]
            assert first in reference, f"{path}: {first} is not documented"
    # Deterministic and plain: no terminal-width wrapping, no ANSI, no absolute checkout paths.
    assert docgen.cli_reference() == reference
    assert "\x1b[" not in reference
    assert str(ROOT) not in reference


def test_plugin_tables_list_every_dataset(all_plugins: None) -> None:
    tables = docgen.plugin_tables()
    for entry in registry.list_plugins():
        assert f"`{entry.name}`" in tables
    example = registry.get_dataset("example")
    for prop in example.properties():
        assert f"| `{prop.name}` | {prop.unit} | {prop.size} |" in tables


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install 'recinet[docs]')")
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in ("index.html", "cli/index.html", "plugin-tables/index.html", "reproduce/index.html"):
        assert (site / page).is_file(), page


def test_example_plugin_is_discovered_and_loads(all_plugins: None) -> None:
    entry = registry.discover("recinet.datasets").get("example")
    assert entry is not None, (
        "the example plugin is not installed: pip install --no-deps -e plugins/recinet-example"
    )
    assert entry.distribution == "recinet-example"
    dataset = registry.get_dataset("example")
    split = dataset.load(["exfoliation_energy", "bandgap"])
    assert split.property_names == ("exfoliation_energy", "bandgap_opt")
    assert split.targets.shape == (100, 2)
    assert {k: len(v) for k, v in split.split.items()} == {"train": 80, "val": 10, "test": 10}
