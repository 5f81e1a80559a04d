"""Shared helpers for the training tests (no fixtures here: tests/train has no conftest).

The tiny training runs use the 50 labelled JARVIS POSCARs bundled in
``examples/structures/jarvis_poscars`` (real OptB88vdW band gaps in ``id_prop.csv``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from recinet_cli.cli.app import app
from tests.conftest import ROOT

#: 70 real JARVIS POSCARs, 50 of them labelled in id_prop.csv (headerless: id,bandgap).
POSCARS = ROOT / "examples" / "structures" / "jarvis_poscars"

#: The smallest useful model and schedule (the brief's "tiny" run).
TINY = ["--blocks", "1", "--hidden", "32", "--epochs", "2", "--batch-size", "8"]

#: The task every CLI run here trains.
TASK = ["--task", "folder:bandgap", "--data", str(POSCARS)]


def invoke(args: list[str]) -> Result:
    """Run ``recinet ARGS`` in this process (what a user sees: stdout, stderr, exit code)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def error_message(result: Result) -> str:
    """The message of a failed command, checking the CLI contract: exit code 2, exactly one
    ``error: ...`` line, last on stderr, and no traceback."""
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    err_lines = result.stderr.strip().splitlines()
    errors = [line for line in err_lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert err_lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.output
    return errors[0][len("error: "):]


def labelled_gaps() -> dict[str, float]:
    """``id_prop.csv`` as {structure id: band gap}; ids drop the ``.vasp`` suffix as the
    structure reader does (``POSCAR-JVASP-10.vasp`` -> ``POSCAR-JVASP-10``)."""
    with open(POSCARS / "id_prop.csv", newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    return {name.removesuffix(".vasp"): float(value) for name, value in rows}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows as dicts) of a CSV file."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def set_graph_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """Share one graph cache between tests (featurizing the 50 POSCARs takes seconds); the
    model store stays the per-test one of ``tests/conftest.py``."""
    monkeypatch.setenv("RECINET_CACHE_DIR", str(cache))


def session_cache(factory: pytest.TempPathFactory) -> Path:
    """A graph-cache folder shared by every test module of this session."""
    path = factory.getbasetemp() / "train-graph-cache"
    path.mkdir(exist_ok=True)
    return path


def isolated_env(mp: pytest.MonkeyPatch, home: Path, cache: Path) -> None:
    """For module-scoped fixtures (which run outside the per-test isolation): point every
    user directory at ``home`` and the graph cache at ``cache``."""
    for var in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        mp.setenv(var, str(home / var.lower()))
    mp.setenv("RECINET_HOME", str(home / "recinet"))
    mp.setenv("RECINET_CACHE_DIR", str(cache))
    mp.delenv("RECINET_MODELS_DIR", raising=False)


def mae(pairs: list[tuple[float, float]]) -> float:
    """Mean absolute difference of (true, pred) pairs."""
    return math.fsum(abs(t - p) for t, p in pairs) / len(pairs)
