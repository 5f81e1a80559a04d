"""``recinet featurize`` end to end: content, append/resume rules, and real SIGKILLs."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from recinet_cli.cli.app import app
from recinet_cli.store.reader import GraphStore
from tests.conftest import shared_path

RECINET = [sys.executable, "-m", "recinet_cli.cli.app"]


@pytest.fixture(scope="module")
def mp_cifs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 real Materials Project structures written as CIF files."""
    dest = tmp_path_factory.mktemp("mp_cifs")
    with gzip.open(shared_path("mp", "mp_36k.jsonl.gz"), "rt") as fh:
        for _, line in zip(range(240), fh):
            rec = json.loads(line)
            (dest / f"{rec['material_id']}.cif").write_text(rec["cif"])
    return dest


def store_content(path: Path) -> dict[str, object]:
    """Every dataset and attribute of a store, minus the run tokens (which differ per run)."""
    out: dict[str, object] = {}
    with h5py.File(path, "r") as h5:
        out.update({f"@{k}": v for k, v in h5.attrs.items() if k != "merged_runs"})

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        h5.visititems(visit)
    return out


def assert_same_content(a: Path, b: Path) -> None:
    ca, cb = store_content(a), store_content(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        if isinstance(ca[key], np.ndarray):
            np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)
        else:
            assert ca[key] == cb[key], key


def test_featurize_stores_real_structures(tmp_path: Path, mp_cifs: Path) -> None:
    out = tmp_path / "graphs.h5"
    res = CliRunner().invoke(app, ["featurize", str(mp_cifs), "-o", str(out), "--workers", "2"])
    assert res.exit_code == 0, res.output
    with GraphStore(out) as store:
        assert len(store) == 240
        assert store.featurizer["max_neighbors"] == 16 and store.featurizer["cutoff"] == 4.0
        g = store[store.index_of("mp-1000")]
        assert g.edge_index.shape[1] == 2 and len(g.edge_index) >= 16 * len(g.numbers)
        # every atom has at least 16 outgoing edges, the k-NN rule
        assert np.bincount(g.edge_index[:, 0], minlength=len(g.numbers)).min() >= 16
        d = np.linalg.norm(g.edge_vectors, axis=1)
        assert d.min() > 0.15
    assert (tmp_path / "graphs.failed.csv").read_text().splitlines() == ["source,id,reason"]


def test_rerun_is_a_no_op_and_appending_new_files_works(tmp_path: Path, mp_cifs: Path) -> None:
    files = sorted(mp_cifs.glob("*.cif"))
    out = tmp_path / "g.h5"
    runner = CliRunner()
    assert runner.invoke(app, ["featurize", *map(str, files[:50]), "-o", str(out), "-j", "1"]).exit_code == 0
    before = store_content(out)
    res = runner.invoke(app, ["featurize", *map(str, files[:50]), "-o", str(out), "-j", "1"])
    assert res.exit_code == 0 and "50 input files already done" in res.output
    assert store_content(out).keys() == before.keys()
    assert runner.invoke(app, ["featurize", *map(str, files[:80]), "-o", str(out), "-j", "1"]).exit_code == 0
    whole = tmp_path / "whole.h5"
    assert runner.invoke(app, ["featurize", *map(str, files[:80]), "-o", str(whole), "-j", "1"]).exit_code == 0
    assert_same_content(out, whole)


def test_appending_with_other_parameters_is_refused(tmp_path: Path, mp_cifs: Path) -> None:
    files = sorted(map(str, mp_cifs.glob("*.cif")))[:5]
    out = tmp_path / "g.h5"
    runner = CliRunner()
    assert runner.invoke(app, ["featurize", *files, "-o", str(out), "-j", "1"]).exit_code == 0
    res = runner.invoke(app, ["featurize", *files, "-o", str(out), "-j", "1", "--max-neighbors", "12"])
    assert res.exit_code == 2
    assert "different featurizer parameters" in res.output and "max_neighbors" in res.output
    res = runner.invoke(app, ["featurize", *files, "-o", str(out), "-j", "1", "--max-neighbors", "12", "--overwrite"])
    assert res.exit_code == 0
    assert GraphStore(out).featurizer["max_neighbors"] == 12


def _shards(out: Path) -> int:
    partial = Path(str(out) + ".partial")
    return len(list(partial.glob("shard-*.h5"))) if partial.is_dir() else 0


def _run_and_kill(cmd: list[str], out: Path, new_shards: int, jitter: float) -> int | None:
    """Start ``cmd`` and SIGKILL it ``jitter`` s after ``new_shards`` more shards appeared
    (so every kill lands mid-run, whatever the machine's speed, and at varying points: while
    reading, building graphs or writing the next shard). Returns the exit code if the run
    finished first."""
    target = _shards(out) + new_shards
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and _shards(out) < target:
        assert time.monotonic() < deadline, "no progress in 120 s"
        time.sleep(0.005)
    if proc.poll() is None:
        time.sleep(jitter)
    if proc.poll() is not None:
        return proc.wait()
    os.killpg(proc.pid, signal.SIGKILL)  # the workers die too, as with a real kill -9
    proc.wait()
    return None


def _assert_valid_leftovers(out: Path) -> None:
    """Whatever a kill left behind opens cleanly: the output (if any) and every shard."""
    if out.exists():
        GraphStore(out).close()
    partial = Path(str(out) + ".partial")
    if partial.is_dir():
        for shard in partial.glob("shard-*.h5"):
            with h5py.File(shard, "r") as h5:
                assert h5["structures/id"].shape[0] == h5["structures/atom_ptr"].shape[0] - 1


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_gives_identical_file(tmp_path: Path, mp_cifs: Path) -> None:
    reference = tmp_path / "reference.h5"
    cmd = [*RECINET, "featurize", str(mp_cifs), "--workers", "2", "--shard-size", "7"]
    subprocess.run([*cmd, "-o", str(reference)], check=True, capture_output=True)

    out = tmp_path / "killed.h5"
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(40):
        rc = _run_and_kill([*cmd, "-o", str(out)], out, new_shards=6, jitter=float(rng.uniform(0.0, 0.05)))
        if rc is not None:
            assert rc == 0
            break
        kills += 1
        _assert_valid_leftovers(out)
    else:
        pytest.fail("the run never completed in 40 attempts")
    print(f"killed {kills} times before the run completed")
    assert kills >= 2, "the run finished before it could be killed twice; use more structures"
    assert not Path(str(out) + ".partial").exists()
    assert_same_content(out, reference)


@pytest.mark.slow
def test_sigkill_during_final_write_keeps_old_file_and_resumes(tmp_path: Path, mp_cifs: Path) -> None:
    """Kill while the merged file is being written (the write is slowed down to hit it)."""
    files = sorted(map(str, mp_cifs.glob("*.cif")))
    out = tmp_path / "g.h5"
    runner = CliRunner()
    assert runner.invoke(app, ["featurize", *files[:30], "-o", str(out), "-j", "1"]).exit_code == 0
    before = store_content(out)
    slow_merge = (
        "import sys, time, recinet_cli.store.writer as w, recinet_cli.featurize as f\n"
        "orig = w.append_batch\n"
        "def slow(h5, batch):\n"
        "    orig(h5, batch)\n"
        "    if '.tmp-' in h5.filename:\n"
        "        h5.flush(); print('MERGING', flush=True); time.sleep(30)\n"
        "w.append_batch = slow\n"
        "from recinet_cli.cli.app import app\n"
        "sys.argv = ['recinet'] + sys.argv[1:]\n"
        "app()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", slow_merge, "featurize", *files[:60], "-o", str(out), "-j", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while "MERGING" not in proc.stdout.readline():
        assert time.monotonic() < deadline and proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after_kill = store_content(out)  # the old file is untouched and valid
    assert after_kill.keys() == before.keys()
    np.testing.assert_array_equal(after_kill["structures/id"], before["structures/id"])
    res = runner.invoke(app, ["featurize", *files[:60], "-o", str(out), "-j", "1"])
    assert res.exit_code == 0, res.output
    whole = tmp_path / "whole.h5"
    assert runner.invoke(app, ["featurize", *files[:60], "-o", str(whole), "-j", "1"]).exit_code == 0
    assert_same_content(out, whole)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("g.h5.tmp-")]


def test_labels_are_attached_with_units(tmp_path: Path) -> None:
    poscars = shared_path("samples", "alignn_poscars")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,bandgap (eV),e_form [eV/atom]\nPOSCAR-JVASP-1372,0.73,-0.1\nPOSCAR-JVASP-10,,0.5\n")
    out = tmp_path / "g.h5"
    res = CliRunner().invoke(app, ["featurize", str(poscars), "-o", str(out), "-j", "1", "--labels", str(labels)])
    assert res.exit_code == 0, res.output
    with GraphStore(out) as store:
        assert store.target_names == ["bandgap", "e_form"]
        assert store.target_units == ["eV", "eV/atom"]
        np.testing.assert_array_equal(store[store.index_of("POSCAR-JVASP-1372")].targets, [0.73, -0.1])
        t = store[store.index_of("POSCAR-JVASP-10")].targets
        assert np.isnan(t[0]) and t[1] == 0.5
        assert np.isnan(store[store.index_of("POSCAR-JVASP-13526")].targets).all()
