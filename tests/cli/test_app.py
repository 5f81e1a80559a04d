"""The CLI shell: help without torch, version, plugins listing, bench commands on real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recinet_cli.cli.app import app
from tests.conftest import shared_path


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from recinet_cli.cli.app import app\n"
        "r = CliRunner()\n"
        "for args in (['--help'], ['featurize', '--help'], ['bench', '--help'], ['plugins', '--help']):\n"
        "    res = r.invoke(app, args)\n"
        "    assert res.exit_code == 0, res.output\n"
        "print('torch' in sys.modules, 'pymatgen' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_console_script_help_and_version() -> None:
    res = subprocess.run(["recinet", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "featurize" in res.stdout
    res = subprocess.run(["recinet", "--version"], capture_output=True, text=True)
    from recinet_cli import __version__

    assert res.returncode == 0 and res.stdout.strip() == f"recinet {__version__}"


def test_plugins_lists_builtin_datasets() -> None:
    res = CliRunner().invoke(app, ["plugins", "--json"])
    assert res.exit_code == 0, res.output
    names = {(p["kind"], p["name"]) for p in json.loads(res.output)}
    assert {("dataset", "folder"), ("dataset", "h5")} <= names


def test_bench_graphs_on_real_jarvis_structures(tmp_path: Path) -> None:
    data = shared_path("jarvis", "dft_3d_subset_1743.json.gz")
    out = tmp_path / "graphs.json"
    res = CliRunner().invoke(app, ["bench", "graphs", "--data", str(data), "--limit", "25", "--json", str(out)])
    assert res.exit_code == 0, res.output
    figures = json.loads(out.read_text())
    assert figures["structures"] == 25
    assert figures["identical"] + figures["tie_supersets"] == 25
    assert figures["other_differences"] == 0
    assert figures["max_distance_error"] < 1e-6
    assert figures["speedup"] > 1


@pytest.mark.slow
def test_bench_featurize_on_real_mp_cifs(tmp_path: Path) -> None:
    data = shared_path("mp", "mp_36k.jsonl.gz")
    out = tmp_path / "featurize.json"
    res = CliRunner().invoke(
        app, ["bench", "featurize", "--data", str(data), "-n", "40", "-j", "2", "--workdir", str(tmp_path), "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    figures = json.loads(out.read_text())
    assert figures["structures"] == 40 and figures["floor_seconds"] > 0 and figures["featurize_seconds"] > 0
    assert sorted(map(int, figures["peak_rss_mb"])) == [10, 20, 40]
