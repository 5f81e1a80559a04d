"""``recinet export``: TorchScript, torch.export and ONNX artifacts of small random-weight
bundles, checked here independently of the command's own parity check (loaded with plain
torch / onnxruntime, compared with the eager model on real JARVIS structures), plus the
embedded metadata and the failure modes (parity, missing ONNX extra, tampered bundle)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from recinet_cli import __version__
from recinet_cli import artifact as artifact_mod
from recinet_cli.artifact import INPUT_SPECS, ExportError, read_artifact_metadata
from recinet_cli.bundle import _metadata, load_bundle, read_bundle_info, save_bundle
from recinet_cli.inference import bundle_params, collate, featurize_crystals, model_inputs
from recinet_cli.model.config import ModelConfig
from recinet_cli.model.recinet import INPUT_NAMES, ReciNet
from recinet_cli.paths import sample_structures
from recinet_cli.structures.readers import read_structures
from tests.bundles import make_bundle, store_bundle
from tests.train.helpers import POSCARS, error_message, invoke

FORMATS = {"torchscript": ".pt", "torch-export": ".pt2", "onnx": ".onnx"}
TARGETS = ["bandgap_mbj", "formation_energy"]
SAMPLES = sample_structures()
#: Eight real JARVIS structures that are not among the samples the command checks on.
OTHERS = [p for p in sorted(POSCARS.glob("*.vasp")) if p.name not in {s.name for s in SAMPLES}][:8]
ONE_ATOM = next(p for p in SAMPLES if p.name == "POSCAR-JVASP-21210.vasp")
Runner = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def _needs_onnx(fmt: str) -> None:
    if fmt == "onnx":
        for name in ("onnx", "onnxruntime", "onnxscript"):
            pytest.importorskip(name, reason='the ONNX extra is not installed (pip install "recinet[onnx]")')


@pytest.fixture(scope="module")
def crystals() -> dict[str, list[Any]]:
    samples, failed = read_structures(SAMPLES)
    others, failed2 = read_structures(OTHERS)
    assert not failed and not failed2 and len(samples) == 7 and len(others) == 8
    return {"samples": samples, "others": others}


def _inputs(model: ReciNet, info: dict[str, Any], crystals: Sequence[Any]) -> tuple[torch.Tensor, ...]:
    """The documented input tuple (dtypes of the metadata contract) for ``crystals``."""
    batch = collate(featurize_crystals(crystals, bundle_params(info)))
    dtypes = {"int64": torch.int64, "float32": torch.float32}
    inputs = model_inputs(model, batch)
    return tuple(inputs[n].to(dtypes[INPUT_SPECS[n][0]]) for n in INPUT_NAMES)


def _plain_loader(path: Path, fmt: str) -> Runner:
    """Load an artifact with nothing but torch / onnxruntime."""
    if fmt == "torchscript":
        scripted = torch.jit.load(str(path))
        return lambda args: scripted(*args)
    if fmt == "torch-export":
        module = torch.export.load(str(path)).module()
        return lambda args: module(*args)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # ScatterND(add) races with more threads (docs/deploy.md)
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
    onnx_types = {"int64": "tensor(int64)", "float32": "tensor(float)"}
    assert [i.type for i in session.get_inputs()] == [onnx_types[INPUT_SPECS[n][0]] for n in INPUT_NAMES]
    return lambda args: torch.from_numpy(session.run(None, {n: a.numpy() for n, a in zip(INPUT_NAMES, args)})[0])


def assert_matches_eager(path: Path, fmt: str, bundle: Path, crystals: dict[str, list[Any]]) -> None:
    """The artifact gives the eager model's predictions on the samples, on eight other real
    structures, on a mixed batch, and on one crystal alone (the smallest and the largest)."""
    model, info = load_bundle(bundle)
    run = _plain_loader(path, fmt)
    samples, others = crystals["samples"], crystals["others"]
    alone = sorted(samples + others, key=lambda c: len(c.numbers))
    groups = [samples, others, samples[::2] + others[::3], alone[:1], alone[-1:]]
    for group in groups:
        args = _inputs(model, info, group)
        with torch.no_grad():
            want = model(*args)
            got = run(args)
        assert got.shape == (len(group), len(model.config.targets))
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def export(model: str | Path, fmt: str, out: Path | None, *extra: str) -> Any:
    args = ["export", str(model), "--format", fmt, *extra]
    return invoke([*args, "-o", str(out)] if out is not None else args)


def no_temporaries(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def moe_bundle(path: Path, targets: Sequence[str]) -> Path:
    """A bundle with the ``mt-moe`` head and a random (trained-like) router: the random-init
    router weights are all zero, and exactly tied routing scores are an arbitrary top-k pick."""
    info = read_bundle_info(make_bundle(path, targets))
    torch.manual_seed(1)
    config = ModelConfig(hidden=16, blocks=1, rbf_bins=16, filter_rbf=8, head="mt-moe",
                         head_options={"n_experts": 4, "top_k": 2}, targets=tuple(targets))
    net = ReciNet(config).eval()
    torch.nn.init.normal_(net.head.w_gate)
    net.set_scaler(torch.tensor([0.5, 1.5]), torch.tensor([1.0, 2.0]))
    return save_bundle(path, net, {**info, "model_config": config.to_dict()})


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_each_format(fmt: str, tmp_path: Path, crystals: dict[str, list[Any]],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_onnx(fmt)
    bundle = store_bundle("gap", tmp_path, TARGETS)
    out_dir = tmp_path / "out"
    out = out_dir / f"gap{FORMATS[fmt]}"
    result = export("gap", fmt, out)
    assert result.exit_code == 0, result.output
    for text in ("bandgap_mbj", "formation_energy", "eV/atom", "max |diff|", "tolerance", f"wrote {out}"):
        assert text in result.stdout, result.stdout
    assert "FAILED" not in result.stdout
    assert sorted(p.name for p in out_dir.iterdir()) == [out.name]

    assert_matches_eager(out, fmt, bundle, crystals)

    # metadata: read without running or unpickling anything
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("reading the metadata must not load the model")

    with monkeypatch.context() as mp:
        for owner, name in ((pickle, "load"), (pickle, "loads"), (torch, "load"), (torch.jit, "load"),
                            (torch.export, "load")):
            mp.setattr(owner, name, forbidden)
        meta = read_artifact_metadata(out)
    info = read_bundle_info(bundle)
    assert set(meta) == {
        "format", "format_version", "export_format", "recinet_version", "model_name",
        "bundle_weights_sha256", "inputs", "output", "targets", "featurizer", "featurizer_hash",
        "reciprocal", "parity", "parity_structures",
    }
    assert (meta["format"], meta["format_version"], meta["export_format"]) == ("recinet-export", 1, fmt)
    assert (meta["recinet_version"], meta["model_name"]) == (__version__, "gap")
    assert meta["bundle_weights_sha256"] == _metadata(bundle)["weights_sha256"]
    assert meta["inputs"][1] == {"name": "edge_index", "dtype": "int64", "shape": "[2, E]"}
    assert [(i["name"], i["dtype"], i["shape"]) for i in meta["inputs"]] == [
        (n, *INPUT_SPECS[n]) for n in INPUT_NAMES
    ]
    assert meta["output"] == {"shape": "[B, T]", "units": "physical"}
    assert meta["targets"] == [{"name": "bandgap_mbj", "unit": "eV"}, {"name": "formation_energy", "unit": "eV/atom"}]
    assert meta["featurizer"] == info["featurizer"] and meta["featurizer_hash"] == info["featurizer_hash"]
    assert meta["reciprocal"] == {"enabled": True, "kset": "sphere", "gmax": 2.5, "box": [2, 2, 2]}
    assert meta["parity_structures"] == [p.name.removesuffix(".vasp") for p in SAMPLES]
    stds = info["scaler"]["std"]
    assert list(meta["parity"]) == TARGETS
    assert all(0 <= meta["parity"][t] <= 1e-4 * s for t, s in zip(TARGETS, stds))


@pytest.mark.parametrize("how", ["store", "file", "dir"])
def test_default_output_name_and_model_references(how: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store_bundle("gap", tmp_path, ["bandgap_mbj"])
    run_dir = tmp_path / "run-7"
    run_dir.mkdir()
    make_bundle(run_dir / "model.safetensors", ["bandgap_mbj"])
    model, name = {"store": ("gap", "gap"), "file": (tmp_path / "gap.safetensors", "gap"),
                   "dir": (run_dir, "run-7")}[how]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = export(model, "torchscript", None)
    assert result.exit_code == 0, result.output
    assert [p.name for p in cwd.iterdir()] == [f"{name}.pt"]
    assert read_artifact_metadata(cwd / f"{name}.pt")["model_name"] == name


VARIANTS: dict[str, dict[str, Any]] = {
    "mt-moe": {"targets": TARGETS, "moe": True},
    "kset-box": {"targets": TARGETS, "model": {"kset": "box", "box": [1, 1, 1]}},
    "no-reciprocal": {"targets": TARGETS, "model": {"reciprocal": False}},
}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_variants(variant: str, fmt: str, tmp_path: Path, crystals: dict[str, list[Any]]) -> None:
    _needs_onnx(fmt)
    spec = VARIANTS[variant]
    path = tmp_path / f"{variant}.safetensors"
    bundle = moe_bundle(path, spec["targets"]) if spec.get("moe") else make_bundle(
        path, spec["targets"], model=spec.get("model"))
    out = tmp_path / f"model{FORMATS[fmt]}"
    result = export(bundle, fmt, out)
    assert result.exit_code == 0, result.output
    assert_matches_eager(out, fmt, bundle, crystals)
    meta = read_artifact_metadata(out)
    assert [t["name"] for t in meta["targets"]] == spec["targets"]
    config = load_bundle(bundle)[0].config
    assert meta["reciprocal"] == {"enabled": config.reciprocal, "kset": config.kset,
                                  "gmax": config.gmax, "box": list(config.box)}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torch-export", "onnx"])
def test_one_atom_example_still_gives_dynamic_sizes(fmt: str, tmp_path: Path,
                                                    crystals: dict[str, list[Any]]) -> None:
    """Parity on the user's structures; a single one-atom crystal is the export example
    (N = B = 1), yet the artifact takes any batch."""
    _needs_onnx(fmt)
    bundle = make_bundle(tmp_path / "gap.safetensors", ["bandgap_opt"])  # the scalar head
    out = tmp_path / f"gap{FORMATS[fmt]}"
    result = export(bundle, fmt, out, "--structures", str(ONE_ATOM))
    assert result.exit_code == 0, result.output
    assert "on 1 structure" in result.stdout and "on 1 structures" not in result.stdout
    assert read_artifact_metadata(out)["parity_structures"] == ["POSCAR-JVASP-21210"]
    assert_matches_eager(out, fmt, bundle, crystals)


def test_user_structures_files_and_directories(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    for p in OTHERS[:3]:
        shutil.copy(p, folder / p.name)
    bundle = make_bundle(tmp_path / "gap.safetensors", TARGETS)
    out = tmp_path / "gap.pt"
    result = export(bundle, "torchscript", out, "--structures", str(folder), "--structures", str(OTHERS[5]),
                    "--tolerance", "1e-3")
    assert result.exit_code == 0, result.output
    assert "on 4 structures" in result.stdout
    meta = read_artifact_metadata(out)
    assert sorted(meta["parity_structures"]) == sorted(p.name.removesuffix(".vasp") for p in [*OTHERS[:3], OTHERS[5]])


def test_unreadable_structures_are_one_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.vasp"
    bad.write_text("not a POSCAR\n")
    bundle = make_bundle(tmp_path / "gap.safetensors", TARGETS)
    message = error_message(export(bundle, "torchscript", tmp_path / "gap.pt", "--structures", str(bad)))
    assert "--structures" in message and "broken.vasp" in message
    message = error_message(export(bundle, "torchscript", tmp_path / "gap.pt", "--structures", str(tmp_path / "none")))
    assert "--structures" in message
    assert not (tmp_path / "gap.pt").exists()


@pytest.mark.parametrize(("perturb", "fmt"), [("offset", "torchscript"), ("offset", "torch-export"),
                                               ("offset", "onnx"), ("nan", "torchscript")])
def test_parity_failure_writes_nothing(perturb: str, fmt: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_onnx(fmt)
    real = artifact_mod.load_artifact

    def perturbed(path: Path, fmt: str | None = None) -> Callable[..., torch.Tensor]:
        run = real(path, fmt)

        def wrong(*args: torch.Tensor) -> torch.Tensor:
            y = run(*args).clone()
            y[:, -1] = y[:, -1] + 0.5 if perturb == "offset" else float("nan")
            return y

        return wrong

    monkeypatch.setattr(artifact_mod, "load_artifact", perturbed)
    store_bundle("gap", tmp_path, TARGETS)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / f"gap{FORMATS[fmt]}"
    result = export("gap", fmt, out)
    message = error_message(result)
    assert message.startswith("parity check failed for formation_energy")
    assert ("NaN" if perturb == "nan" else "max |diff| 0.5 eV/atom") in message
    assert "tolerance 0.0002 eV/atom" in message
    assert "FAILED" in result.stdout  # the table is still shown
    assert list(out_dir.iterdir()) == []


def test_parity_failure_keeps_an_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = artifact_mod.load_artifact
    monkeypatch.setattr(artifact_mod, "load_artifact",
                        lambda path, fmt=None: (lambda *a, _r=real(path, fmt): _r(*a) * 2.0))
    bundle = make_bundle(tmp_path / "gap.safetensors", TARGETS)
    out = tmp_path / "gap.pt"
    out.write_bytes(b"previous export")
    error_message(export(bundle, "torchscript", out))
    assert out.read_bytes() == b"previous export"
    no_temporaries(tmp_path)


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime", "onnxscript"])
def test_onnx_without_the_extra(missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError
    store_bundle("gap", tmp_path, TARGETS)
    message = error_message(export("gap", "onnx", tmp_path / "gap.onnx"))
    assert 'pip install "recinet[onnx]"' in message and f"missing: {missing}" in message
    assert not (tmp_path / "gap.onnx").exists()


def test_tampered_bundle_is_refused_without_unpickling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = make_bundle(tmp_path / "gap.safetensors", TARGETS)
    raw = bytearray(bundle.read_bytes())
    raw[-3] ^= 0x5A  # in the tensor payload
    bundle.write_bytes(bytes(raw))

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("export must never unpickle a bundle")

    for owner, name in ((pickle, "load"), (pickle, "loads"), (torch, "load"), (torch.jit, "load")):
        monkeypatch.setattr(owner, name, forbidden)
    message = error_message(export(bundle, "torchscript", tmp_path / "gap.pt"))
    assert "checksum" in message
    assert not (tmp_path / "gap.pt").exists()
    no_temporaries(tmp_path)


def test_unknown_model(tmp_path: Path) -> None:
    message = error_message(export("nope", "torchscript", tmp_path / "x.pt"))
    assert "no model 'nope'" in message


def test_metadata_of_foreign_files(tmp_path: Path) -> None:
    checkpoint = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, checkpoint)  # a zip archive without recinet metadata
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    other = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(other),
                   _extra_files={"recinet.json": json.dumps({"format": "something-else"})})
    newer = tmp_path / "newer.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(newer),
                   _extra_files={"recinet.json": json.dumps({"format": "recinet-export", "format_version": 99})})
    cases = {checkpoint: "without recinet export metadata", scripted: "without recinet export metadata",
             other: "not a recinet export", newer: "newer than this recinet reads",
             tmp_path / "missing.pt": "no such file"}
    for path, match in cases.items():
        with pytest.raises(ExportError, match=match):
            read_artifact_metadata(path)
    assert zipfile.is_zipfile(checkpoint)


def test_metadata_of_a_foreign_onnx_file(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ExportError, match="no recinet export metadata"):
        read_artifact_metadata(path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(64))
    with pytest.raises(ExportError):
        read_artifact_metadata(garbage)


def test_help_lists_the_formats() -> None:
    result = invoke(["export", "--help"])
    assert result.exit_code == 0
    for fmt in FORMATS:
        assert fmt in result.stdout
