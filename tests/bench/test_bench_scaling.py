"""``recinet bench scaling``: a small real run through the CLI (JSON, PNG, resume) and its parts.

No timed assertions: the figures are only checked to be present, positive and consistent.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import recinet_cli.bench.scaling as scaling
from recinet_cli.cli.app import app
from tests.conftest import shared_path

#: A tiny model (hidden options) on one thread: the test is about the plumbing.
TINY = ["--hidden", "16", "--blocks", "1", "--repeats", "1", "--threads", "1", "--budget", "2", "--device", "cpu"]


def _jarvis() -> Path:
    return shared_path("jarvis", "dft_3d_subset_1743.json.gz")


def _invoke(args: list[str]) -> Any:
    res = CliRunner().invoke(app, ["bench", "scaling", "--data", str(_jarvis()), *TINY, *args])
    assert res.exit_code == 0, res.output + res.stderr + repr(res.exception)
    return res


@pytest.mark.slow
def test_scaling_command_json_plot_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, png = tmp_path / "scaling.json", tmp_path / "scaling.png"
    first = _invoke(["--sizes", "1,8", "--json", str(out)])
    assert "[4/4] box, 8 atoms (2x2x2 of JVASP-961)" in first.stderr  # progress on stderr
    assert [(p["kset"], p["target_atoms"]) for p in json.loads(out.read_text())["points"]] == [
        ("sphere", 1), ("sphere", 8), ("box", 1), ("box", 8)
    ]

    measured: list[tuple[str, int]] = []
    real = scaling.measure_point

    def counting(model: Any, base: Any, target: int, *args: Any, **kwargs: Any) -> scaling.ScalingPoint:
        measured.append((model.config.kset, target))
        return real(model, base, target, *args, **kwargs)

    monkeypatch.setattr(scaling, "measure_point", counting)
    res = _invoke(["--sizes", "1,8,27", "--fit-min", "8", "--json", str(out), "--plot", str(png), "--resume"])
    assert measured == [("sphere", 27), ("box", 27)]  # 1 and 8 atoms came from the file
    assert res.stderr.count("reused from") == 4
    assert "fitted exponent" in res.output and "sphere k-set" in res.output and "box k-set" in res.output

    f = json.loads(out.read_text())
    s = f["setup"]
    assert f["benchmark"] == "scaling" and s["base_cell"] == "JVASP-961" and s["base_atoms"] == 1
    assert s["model"]["hidden"] == 16 and s["modes"] == ["forward", "backward"] and s["threads"] == 1
    points = f["points"]
    assert [(p["kset"], p["target_atoms"]) for p in points] == [
        ("sphere", 1), ("sphere", 8), ("sphere", 27), ("box", 1), ("box", 8), ("box", 27)
    ]
    for p in points:
        assert p["error"] is None
        # a 1-atom base cell tiles cube targets exactly
        assert p["atoms"] == p["target_atoms"] == math.prod(p["supercell"])
        assert p["pairs"] == p["atoms"] * p["kvectors"] and p["edges"] >= p["atoms"]
        for mode in ("forward", "backward"):
            assert set(p["min_seconds"][mode]) == {"model", "local", "reciprocal"}
            for comp, samples in p["seconds"][mode].items():
                assert len(samples) >= 1 and all(t > 0 for t in samples)
                assert p["min_seconds"][mode][comp] == min(samples)
                peak = p["peak_bytes"][mode][comp]
                assert peak is None or peak >= 0
        assert set(p["in_situ_forward_seconds"]) == {"local", "reciprocal"}
    box = [p for p in points if p["kset"] == "box"]
    sphere = [p for p in points if p["kset"] == "sphere"]
    assert {p["kvectors"] for p in box} == {62}  # box(2,2,2): (5^3 - 1) / 2 for every cell
    assert [p["kvectors"] for p in sphere] == sorted(p["kvectors"] for p in sphere)  # grows with the cell
    assert sphere[0]["kvectors"] > 0  # the default base has sphere k-vectors

    fits = f["fits"]
    assert {(x["kset"], x["mode"], x["component"], x["quantity"]) for x in fits} == {
        (k, m, c, q) for k in ("sphere", "box") for m in ("forward", "backward")
        for c in ("model", "local", "reciprocal") for q in ("time", "memory")
    }
    for x in fits:
        if x["quantity"] == "time":
            assert x["atoms"] == [8, 27] and math.isfinite(x["exponent"]) and x["prefactor"] > 0

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    res = CliRunner().invoke(
        app, ["bench", "scaling", "--data", str(_jarvis()), *TINY, "--sizes", "1", "--plot", str(tmp_path / "x.png")]
    )
    assert res.exit_code != 0
    assert res.stderr.strip() == 'error: install the plot extra: pip install "recinet[plot]"'
    assert not (tmp_path / "x.png").exists()


def test_resume_refuses_another_setup(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    out.write_text(json.dumps({
        "benchmark": "scaling", "version": scaling.JSON_VERSION,
        "setup": {"base_cell": "JVASP-961", "model": {"hidden": 999}}, "points": [],
    }))
    res = CliRunner().invoke(
        app, ["bench", "scaling", "--data", str(_jarvis()), *TINY, "--sizes", "1", "--json", str(out), "--resume"]
    )
    assert res.exit_code != 0 and "was measured with a different model" in res.stderr


def test_resume_needs_json() -> None:
    res = CliRunner().invoke(app, ["bench", "scaling", "--data", str(_jarvis()), *TINY, "--resume"])
    assert res.exit_code != 0 and "--resume needs --json" in res.stderr


def test_bad_sizes_and_ksets_are_usage_errors() -> None:
    for args in (["--sizes", "0,8"], ["--sizes", "a"], ["--kset", "cube"]):
        res = CliRunner().invoke(app, ["bench", "scaling", "--data", str(_jarvis()), *TINY, *args])
        assert res.exit_code == 2, args


def test_fit_power_law_recovers_exponents() -> None:
    atoms = [27, 64, 125, 1000]
    for b in (1.0, 2.0, 1.37):
        got = scaling.fit_power_law(atoms, [3e-4 * n**b for n in atoms])
        assert got is not None
        exponent, prefactor, r2 = got
        assert exponent == pytest.approx(b) and prefactor == pytest.approx(3e-4) and r2 == pytest.approx(1.0)
    assert scaling.fit_power_law([27], [1.0]) is None  # one size: no fit
    assert scaling.fit_power_law([27, 64], [1.0, None]) is None  # missing values are dropped
    assert scaling.fit_power_law([27, 64], [1.0, 2.0])[2] is None  # two points: no r2  # type: ignore[index]


def test_peak_memory_sees_a_large_allocation() -> None:
    import torch

    mem = scaling.PeakMemory(torch.device("cpu"))
    if mem.method == "none":
        pytest.skip("no /proc/self/clear_refs and no psutil here")
    n = 64 * 2**20 // 4  # 64 MiB of float32, written so the pages are resident
    peak = mem.measure(lambda: torch.ones(n).sum())
    assert peak is not None and peak >= 48 * 2**20
