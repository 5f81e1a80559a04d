"""``recinet predict`` end to end on real structures, and the Python API ``recinet_cli.predict``."""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import recinet_cli
from recinet_cli.bundle import load_bundle, read_bundle_info
from recinet_cli.inference import collate, featurize_crystals, model_inputs
from recinet_cli.prediction import PredictError
from recinet_cli.structures.graph import GraphParams
from recinet_cli.structures.readers import read_structures
from tests.bundles import store_bundle
from tests.conftest import cod_cif, edited_nacl
from tests.train.helpers import (
    POSCARS,
    TASK,
    TINY,
    error_message,
    invoke,
    isolated_env,
    read_csv,
    session_cache,
)

#: A few real JARVIS POSCARs (1-32 atoms) and the real COD CIFs (with symmetry operations).
SOME = sorted(POSCARS.glob("*.vasp"))[:12]
NA_SITE = "Na1 Na1+ 4 a 0. 0. 0. 1. 0 d"
CL_SITE = "Cl1 Cl1- 4 b 0.5 0.5 0.5 1. 0 d"
CIFS = Path(__file__).resolve().parents[2] / "examples" / "structures" / "cod_cifs"


def eager(bundle: Path, paths: list[Path], params: GraphParams | None = None) -> dict[str, np.ndarray]:
    """{structure id: [T] predictions} of a bundle, computed directly (no predict pipeline),
    in predict's default precision (auto) with merged edges, as predict computes them."""
    from recinet_cli.model.precision import autocast

    model, info = load_bundle(bundle)
    crystals, failures = read_structures(paths)
    assert not failures
    records = featurize_crystals(crystals, params or GraphParams.from_dict(info["featurizer"]))
    with torch.no_grad(), autocast("auto", "cpu"):
        y = model(**model_inputs(model, collate(records), merge_edges=True)).double().numpy()
    return {c.id: y[i] for i, c in enumerate(crystals)}


def csv_rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


# ----------------------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run dir, store home) of a tiny real training run on the labelled JARVIS POSCARs."""
    home = tmp_path_factory.mktemp("predict-home")
    run = tmp_path_factory.mktemp("predict-runs") / "RUN"
    with pytest.MonkeyPatch.context() as mp:
        isolated_env(mp, home, session_cache(tmp_path_factory))
        result = invoke(["train", *TASK, *TINY, "-o", run, "--name", "gap", "--group", "gaps"])
    assert result.exit_code == 0, result.output
    return run, home


@pytest.mark.slow
def test_predict_reproduces_the_training_runs_test_predictions(trained: tuple[Path, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run, home = trained
    isolated_env(monkeypatch, home, tmp_path / "cache")
    out = tmp_path / "pred.csv"
    result = invoke(["predict", POSCARS, "--props", "bandgap", "-o", out])
    assert result.exit_code == 0, result.output
    assert "bandgap: gaps, validation MAE" in result.stderr  # which model (group) serves the column
    info = read_bundle_info(run / "model.safetensors")
    assert info["group"] == "gaps" and info["targets"] == [{"name": "bandgap", "unit": "", "aliases": []}]  # headerless id_prop.csv: no unit
    header, rows = read_csv(out)
    assert header == ["id", "formula", "bandgap", "bandgap model", "error", "source"]
    assert len(rows) == 70 and all(r["error"] == "" and r["bandgap model"] == "gaps" for r in rows)
    assert f"wrote {out}: 70 predicted, 0 failed" in result.stdout
    predicted = {r["id"]: float(r["bandgap"]) for r in rows}
    _, test_rows = read_csv(run / "test_predictions.csv")
    assert test_rows
    for r in test_rows:  # the training run's own evaluation of the same structures
        assert predicted[r["id"]] == pytest.approx(float(r["bandgap_pred"]), rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- outputs


@pytest.fixture
def mt_model(tmp_path: Path) -> Path:
    return store_bundle("mt", tmp_path, ["bandgap_mbj", "bandgap_opt"], val_mae={"bandgap_mbj": 0.4, "bandgap_opt": 0.2})


def test_csv_json_and_piped_output_have_the_same_columns_and_values(mt_model: Path, tmp_path: Path) -> None:
    expected = eager(mt_model, SOME)
    piped = invoke(["predict", *SOME, "--props", "mbj_bandgap,bandgap_opt"])
    assert piped.exit_code == 0, piped.output
    header, rows = csv_rows(piped.stdout)
    assert header == ["id", "formula", "bandgap_mbj (eV)", "bandgap_opt (eV)", "bandgap_mbj model",
                      "bandgap_opt model", "error", "source"]
    assert [r["id"] for r in rows] == [p.stem for p in SOME]  # input order
    for r in rows:
        assert float(r["bandgap_mbj (eV)"]) == pytest.approx(expected[r["id"]][0], rel=1e-6)
        assert float(r["bandgap_opt (eV)"]) == pytest.approx(expected[r["id"]][1], rel=1e-6)
    assert invoke(["predict", *SOME, "-p", "bandgap_mbj,bandgap_opt", "-o", tmp_path / "o.csv"]).exit_code == 0
    assert (tmp_path / "o.csv").read_text() == piped.stdout
    assert invoke(["predict", *SOME, "-p", "bandgap_mbj,bandgap_opt", "-o", tmp_path / "o.json"]).exit_code == 0
    doc = json.loads((tmp_path / "o.json").read_text())
    assert [c["name"] for c in doc["columns"]] == ["bandgap_mbj", "bandgap_opt"]
    assert doc["columns"][0]["unit"] == "eV" and doc["columns"][0]["members"][0]["name"] == "mt"
    assert doc["columns"][0]["members"][0]["val_mae"] == 0.4
    assert doc["structures"] == len(SOME) and doc["failed"] == 0
    for row, csv_row in zip(doc["rows"], rows):
        assert row["id"] == csv_row["id"] and row["error"] is None
        assert row["bandgap_opt"] == pytest.approx(float(csv_row["bandgap_opt (eV)"]), rel=1e-7)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave nothing behind


def test_terminal_table_shows_units_models_and_errors(mt_model: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from recinet_cli.cli import predict as predict_cmd

    screen = io.StringIO()
    monkeypatch.setattr(predict_cmd, "console", Console(file=screen, force_terminal=True, width=250, color_system=None))
    (tmp_path / "broken.cif").write_text("data_x\n_cell_length_a 3\n")
    result = invoke(["predict", SOME[0], tmp_path / "broken.cif", "-p", "bandgap_mbj"])
    assert result.exit_code == 1
    table = screen.getvalue()
    assert "bandgap_mbj (eV)" in table and "mt" in table and SOME[0].stem in table and "broken" in table


def test_bad_structures_get_rows_with_errors_and_exit_code_1(mt_model: Path, tmp_path: Path) -> None:
    cases = {
        "partial.cif": edited_nacl(NA_SITE, NA_SITE.replace(" 1. 0 d", " 0.5 0 d")),  # partial occupancy
        "overlap.cif": edited_nacl(CL_SITE, "Cl1 Cl1- 4 b 0.01 0. 0. 1. 0 d"),
        "garbage.cif": "this is not a CIF\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "good.cif").write_text(cod_cif())
    inputs = [tmp_path / n for n in sorted(cases)] + [tmp_path / "good.cif", tmp_path / "missing.cif"]
    out = tmp_path / "pred.csv"
    result = invoke(["predict", *inputs, "-p", "bandgap_opt", "-o", out, "--workers", "2"])
    assert result.exit_code == 1, result.output
    _, rows = read_csv(out)
    by_source = {Path(r["source"]).name: r for r in rows}
    assert set(by_source) == {*cases, "good.cif", "missing.cif"}  # every input is accounted for
    assert by_source["good.cif"]["error"] == "" and float(by_source["good.cif"]["bandgap_opt (eV)"]) > -1e9
    assert "partial occupancy" in by_source["partial.cif"]["error"]
    assert "overlapping atoms" in by_source["overlap.cif"]["error"]
    assert by_source["missing.cif"]["error"] == "no such file or directory"
    assert by_source["garbage.cif"]["error"]
    for name in ("partial.cif", "overlap.cif", "garbage.cif", "missing.cif"):
        assert by_source[name]["bandgap_opt (eV)"] == ""
    failed_lines = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed_lines) == 4
    assert "wrote" in result.stdout and "1 predicted, 4 failed" in result.stdout
    # --disorder majority turns the partially occupied site into a prediction
    ok = invoke(["predict", tmp_path / "partial.cif", "-p", "bandgap_opt", "--disorder", "majority"])
    assert ok.exit_code == 0, ok.output


def test_featurizer_parameters_come_from_the_bundle(tmp_path: Path) -> None:
    bundle = store_bundle("k8", tmp_path, ["bandgap_opt"], params=GraphParams(max_neighbors=8))
    result = invoke(["predict", *SOME, "-p", "bandgap_opt"])
    assert result.exit_code == 0, result.output
    got = {r["id"]: float(r["bandgap_opt (eV)"]) for r in csv_rows(result.stdout)[1]}
    with8 = eager(bundle, SOME, GraphParams(max_neighbors=8))
    with16 = eager(bundle, SOME, GraphParams(max_neighbors=16))
    assert all(got[k] == pytest.approx(with8[k][0], rel=1e-6) for k in got)
    assert any(abs(got[k] - with16[k][0]) > 1e-4 for k in got)  # the default graphs would differ


def test_workers_and_batch_size_do_not_change_the_results(mt_model: Path) -> None:
    outputs = []
    for args in (["--workers", "0", "--batch-size", "64"], ["--workers", "2", "--batch-size", "3"],
                 ["--workers", "1", "--batch-size", "1"]):
        result = invoke(["predict", POSCARS, "-p", "bandgap_mbj", *args])
        assert result.exit_code == 0, result.output
        outputs.append(csv_rows(result.stdout)[1])
    for other in outputs[1:]:
        assert [r["id"] for r in other] == [r["id"] for r in outputs[0]]
        for a, b in zip(outputs[0], other):
            assert float(a["bandgap_mbj (eV)"]) == pytest.approx(float(b["bandgap_mbj (eV)"]), rel=1e-5, abs=1e-6)


def test_ensembles_give_mean_and_standard_deviation(tmp_path: Path) -> None:
    paths = [store_bundle(f"ef-{s}", tmp_path, ["formation_energy"], group="ef", seed=s) for s in range(3)]
    result = invoke(["predict", *SOME[:4], "-p", "ef"])
    assert result.exit_code == 0, result.output
    header, rows = csv_rows(result.stdout)
    assert "formation_energy_std (eV/atom)" in header
    assert {r["formation_energy model"] for r in rows} == {"ef (3 models)"}
    members = np.stack([np.array([eager(p, SOME[:4])[s.stem][0] for s in SOME[:4]]) for p in paths])
    got = np.array([float(r["formation_energy (eV/atom)"]) for r in rows])
    std = np.array([float(r["formation_energy_std (eV/atom)"]) for r in rows])
    np.testing.assert_allclose(got, members.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, members.std(0), rtol=1e-5)
    assert (std > 0).all()
    # two explicit models: an ensemble labelled by both names
    two = invoke(["predict", SOME[0], "-p", "ef", "--model", "ef-0", "--model", paths[1]])
    assert two.exit_code == 0, two.output
    assert csv_rows(two.stdout)[1][0]["formation_energy model"] == "ef-0+ef-1 (2 models)"


def test_graph_file_input_matches_structure_files(mt_model: Path, tmp_path: Path) -> None:
    graphs = tmp_path / "graphs.h5"
    assert invoke(["featurize", *SOME, "-o", graphs, "--workers", "1"]).exit_code == 0
    from_files = csv_rows(invoke(["predict", *SOME, "-p", "bandgap_mbj"]).stdout)[1]
    result = invoke(["predict", graphs, "-p", "bandgap_mbj"])
    assert result.exit_code == 0, result.output
    from_graphs = csv_rows(result.stdout)[1]
    assert [r["id"] for r in from_graphs] == [r["id"] for r in from_files]
    for a, b in zip(from_files, from_graphs):
        assert a["bandgap_mbj (eV)"] == b["bandgap_mbj (eV)"] and a["formula"] == b["formula"]
    other = tmp_path / "k8.h5"
    assert invoke(["featurize", *SOME[:2], "-o", other, "--max-neighbors", "8", "--workers", "1"]).exit_code == 0
    msg = error_message(invoke(["predict", other, "-p", "bandgap_mbj"]))
    assert "k8.h5: graphs built with" in msg and "model mt was trained on graphs built with" in msg


def test_duplicate_ids_are_refused_unless_suffixed(mt_model: Path, tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(SOME[0], tmp_path / sub / "POSCAR")
    msg = error_message(invoke(["predict", tmp_path / "a", tmp_path / "b", "-p", "bandgap_mbj"]))
    assert "duplicate structure id" in msg and "a/POSCAR" in msg and "b/POSCAR" in msg
    ok = invoke(["predict", tmp_path / "a", tmp_path / "b", "-p", "bandgap_mbj", "--suffix-duplicates"])
    assert ok.exit_code == 0, ok.output
    assert [r["id"] for r in csv_rows(ok.stdout)[1]] == ["POSCAR", "POSCAR-2"]


def test_one_line_errors(mt_model: Path, tmp_path: Path) -> None:
    assert "no model predicts 'ehull'" in error_message(invoke(["predict", SOME[0], "-p", "ehull"]))
    assert "unknown output format" in error_message(invoke(["predict", SOME[0], "-p", "bandgap_mbj", "-o", tmp_path / "x.txt"]))
    if not torch.cuda.is_available():
        assert "CUDA is not available" in error_message(invoke(["predict", SOME[0], "-p", "bandgap_mbj", "--device", "cuda"]))
    assert "not a device" in error_message(invoke(["predict", SOME[0], "-p", "bandgap_mbj", "--device", "gpu0"]))


def test_a_tampered_bundle_is_a_clear_error_and_nothing_is_unpickled(mt_model: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(mt_model.read_bytes())
    data[-100] ^= 0xFF  # flip a weight byte
    mt_model.write_bytes(bytes(data))

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    msg = error_message(invoke(["predict", SOME[0], "-p", "bandgap_mbj"]))
    assert str(mt_model) in msg and "checksum mismatch" in msg
    mt_model.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    assert "not a recinet model bundle" in error_message(invoke(["predict", SOME[0], "--model", mt_model]))


def test_a_structure_whose_forward_fails_fails_alone(mt_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recinet_cli.model import recinet as recinet_model

    real = recinet_model.ReciNet.forward

    def fragile(self: Any, atomic_numbers: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if (atomic_numbers == 34).any():  # selenium
            raise RuntimeError("simulated failure on Se")
        return real(self, atomic_numbers, *args, **kwargs)

    monkeypatch.setattr(recinet_model.ReciNet, "forward", fragile)
    result = invoke(["predict", *SOME, "-p", "bandgap_mbj"])
    assert result.exit_code == 1
    rows = csv_rows(result.stdout)[1]
    crystals, _ = read_structures(SOME)
    has_se = {c.id: bool((c.numbers == 34).any()) for c in crystals}
    assert any(has_se.values()) and not all(has_se.values())
    for r in rows:
        if has_se[r["id"]]:
            assert r["error"] == "prediction failed: simulated failure on Se"
        else:
            assert r["error"] == "" and r["bandgap_mbj (eV)"]


# ----------------------------------------------------------------------------- Python API


def test_python_api_takes_pymatgen_ase_and_paths(mt_model: Path) -> None:
    from ase.io import read as ase_read
    from pymatgen.core import Structure

    s = Structure.from_file(SOME[1])
    atoms = ase_read(SOME[2], format="vasp")
    result = recinet_cli.predict({"pmg": s, "ase": atoms, "file": SOME[3]}, props="bandgap_mbj,bandgap_opt")
    assert [r["id"] for r in result] == ["pmg", "ase", SOME[3].stem]
    expected = eager(mt_model, SOME[1:4])
    for row, path in zip(result.rows, SOME[1:4]):
        assert row["error"] is None
        np.testing.assert_allclose([row["bandgap_mbj"], row["bandgap_opt"]], expected[path.stem], rtol=1e-5)
    assert result.array("bandgap_opt").shape == (3,)
    assert [c.name for c in result.columns] == ["bandgap_mbj", "bandgap_opt"]
    # positional ids, a disordered structure fails alone, lists of props work too
    disordered = s.copy()
    disordered.replace(0, {"V": 0.5, "Cr": 0.5})
    result = recinet_cli.predict([s, disordered], props=["bandgap_mbj"])
    assert [r["id"] for r in result] == ["0", "1"]
    assert result[0]["error"] is None and "partial occupancy" in result[1]["error"]
    assert math.isnan(result.array("bandgap_mbj")[1])
    with pytest.raises(PredictError, match="cannot predict for a dict"):
        recinet_cli.predict([{"not": "a structure"}], props="bandgap_mbj")
    with pytest.raises(KeyError, match="ehull"):
        result.array("ehull")


def test_python_api_and_cli_agree(mt_model: Path, tmp_path: Path) -> None:
    api = recinet_cli.predict([CIFS], props="bandgap_opt")
    cli = csv_rows(invoke(["predict", CIFS, "-p", "bandgap_opt"]).stdout)[1]
    assert [r["id"] for r in api] == [r["id"] for r in cli] and len(cli) == 10
    for a, c in zip(api, cli):
        assert f"{a['bandgap_opt']:.8g}" == c["bandgap_opt (eV)"]


# ----------------------------------------------------------------------------- resume


def test_an_interrupted_run_resumes_and_ends_with_the_uninterrupted_output(
        mt_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recinet_cli.prediction import engine

    inputs = [POSCARS, tmp_path / "missing.cif"]
    args = ["-p", "bandgap_mbj,bandgap_opt", "--batch-size", "8", "--workers", "0"]
    reference = tmp_path / "reference.csv"
    assert invoke(["predict", *inputs, *args, "-o", reference]).exit_code == 1  # one missing file
    out = tmp_path / "out.csv"
    real = engine._forward
    calls = {"n": 0}

    def interrupted(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:  # the 4th batch of 8: 24 structures are done
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(engine, "_forward", interrupted)
    first = invoke(["predict", *inputs, *args, "-o", out])
    assert first.exit_code == 130 and not out.exists()  # Ctrl-C
    journal = Path(f"{out}.partial")
    assert len(journal.read_text().splitlines()) == 1 + 24  # header + one line per finished input
    calls["n"] = -10**6  # no more interruptions; count the batches of the resumed run
    second = invoke(["predict", *inputs, *args, "-o", out])
    assert second.exit_code == 1, second.output
    assert "resuming: 24 inputs already done" in second.stderr
    assert calls["n"] + 10**6 == math.ceil((70 - 24) / 8)  # only the remaining structures ran
    assert out.read_text() == reference.read_text() and not journal.exists()
    # a different command (other properties) does not reuse the journal of another run
    journal.write_text(json.dumps({"format": "recinet-predict-journal/1", "signature": "other"}) + "\n")
    assert invoke(["predict", *inputs, "-p", "bandgap_mbj", "--workers", "0", "-o", out]).exit_code == 1
    assert csv_rows(out.read_text())[0][2] == "bandgap_mbj (eV)" and len(csv_rows(out.read_text())[1]) == 71
