"""Model bundles (safetensors + a JSON self-description, never a pickle) and the model store."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from recinet_cli.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    BundleError,
    load_bundle,
    read_bundle_info,
    save_bundle,
)
from recinet_cli.featurize import featurize_crystal
from recinet_cli.model.config import ModelConfig
from recinet_cli.model.recinet import ReciNet, prepare_inputs
from recinet_cli.modelstore import (
    StoreError,
    check_name,
    free_name,
    get,
    list_models,
    register,
    remove,
    resolve,
)
from recinet_cli.paths import models_dir
from recinet_cli.store.dataset import to_data
from recinet_cli.store.reader import GraphArrays
from recinet_cli.structures.graph import GraphParams
from recinet_cli.structures.readers import read_structures
from tests.train.helpers import POSCARS, error_message, invoke

CONFIG = ModelConfig(hidden=16, blocks=1, rbf_bins=16, filter_rbf=8, targets=("bandgap",))


@pytest.fixture(scope="module")
def batch() -> Batch:
    """Six real JARVIS POSCARs as one PyG batch."""
    crystals, failures = read_structures([str(p) for p in sorted(POSCARS.glob("POSCAR-*.vasp"))[:6]])
    assert not failures and len(crystals) == 6
    datas = []
    for c in crystals:
        rec = featurize_crystal(c, GraphParams())
        datas.append(to_data(GraphArrays(c.id, rec.lattice, rec.numbers, rec.frac, rec.edge_index,
                                         rec.edge_image, np.array([np.nan]))))
    return Batch.from_data_list(datas)


def trained_like_model(batch: Batch) -> ReciNet:
    """A model whose every buffer differs from its initial value: scaler set, BatchNorm
    running statistics moved by training-mode passes."""
    torch.manual_seed(0)
    net = ReciNet(CONFIG)
    net.set_scaler(torch.tensor([1.25]), torch.tensor([0.5]))
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(**prepare_inputs(batch, CONFIG))
    return net.eval()


def predict(net: ReciNet, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return net(**prepare_inputs(batch, net.config))


INFO = {"task": "folder:bandgap", "name": "tiny", "model_config": CONFIG.to_dict(),
        "targets": [{"name": "bandgap", "unit": "eV"}],
        "dataset": {"name": "folder", "version": "local"},
        "metrics": {"best_epoch": 3, "val": {"bandgap": {"mae": 0.4, "rmse": 0.6, "n": 5}}, "test": {"bandgap": {"mae": 0.5, "rmse": 0.7, "n": 5}}},
        "created": "2026-01-01T00:00:00+0000"}


@pytest.fixture(scope="module")
def bundle_bytes(batch: Batch, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = save_bundle(tmp_path_factory.mktemp("bundle") / "model.safetensors", trained_like_model(batch), INFO)
    return path.read_bytes()


@pytest.fixture
def bundle(tmp_path: Path, bundle_bytes: bytes) -> Path:
    """A fresh copy of a saved bundle (tests may damage it)."""
    path = tmp_path / "b" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(bundle_bytes)
    return path


def header(path: Path) -> tuple[int, dict[str, Any]]:
    """(payload offset, header JSON) of a safetensors file, parsed by hand."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return 8 + n, json.loads(raw[8:8 + n])


# ----------------------------------------------------------------------------- bundles


def test_round_trip_gives_identical_predictions(bundle: Path, batch: Batch) -> None:
    before = predict(trained_like_model(batch), batch)
    model, info = load_bundle(bundle)
    assert not model.training
    after = predict(model, batch)
    assert torch.equal(before, after)
    assert float(before.std()) > 0  # a real, non-constant prediction
    assert model.target_mean.tolist() == [1.25] and model.target_std.tolist() == [0.5]
    assert info["task"] == "folder:bandgap" and info["metrics"] == INFO["metrics"]
    assert info["format"] == BUNDLE_FORMAT and info["format_version"] == BUNDLE_VERSION
    assert ModelConfig.from_dict(info["model_config"]) == CONFIG


def test_bundle_is_safetensors_and_loads_without_unpickling(bundle: Path, batch: Batch,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    offset, head = header(bundle)
    meta = head["__metadata__"]
    assert meta["format"] == BUNDLE_FORMAT and len(meta["weights_sha256"]) == 64
    assert json.loads(meta["recinet"])["model_config"] == CONFIG.to_dict()
    tensors = {k: v for k, v in head.items() if k != "__metadata__"}
    assert {"target_mean", "target_std"} <= set(tensors)
    assert max(v["data_offsets"][1] for v in tensors.values()) + offset == bundle.stat().st_size

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a bundle must load without torch.load or pickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    model, _ = load_bundle(bundle)
    assert torch.equal(predict(model, batch), predict(trained_like_model(batch), batch))


def test_flipped_payload_bytes_fail_the_checksum(bundle: Path) -> None:
    offset, _ = header(bundle)
    raw = bytearray(bundle.read_bytes())
    for where in (offset, offset + (len(raw) - offset) // 2, len(raw) - 1):
        tampered = bytearray(raw)
        tampered[where] ^= 0x5A
        bundle.write_bytes(bytes(tampered))
        assert read_bundle_info(bundle)["task"] == "folder:bandgap"  # the header is intact
        with pytest.raises(BundleError, match="checksum"):
            load_bundle(bundle)


@pytest.mark.parametrize("cut", ["payload", "header", "extra"])
def test_truncated_or_extended_bundle(bundle: Path, cut: str) -> None:
    offset, _ = header(bundle)
    raw = bundle.read_bytes()
    bundle.write_bytes({"payload": raw[:-50], "header": raw[: offset // 2], "extra": raw + b"\0" * 8}[cut])
    for fn in (read_bundle_info, load_bundle):
        with pytest.raises(BundleError, match="not a recinet model bundle"):
            fn(bundle)


@pytest.mark.parametrize("content", [b"", b"\x00" * 4, b"not a model at all\n" * 50, b"PK\x03\x04" + bytes(range(256))])
def test_foreign_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "foreign.safetensors"
    path.write_bytes(content)
    with pytest.raises(BundleError, match=f"^{path}: not a recinet model bundle"):
        load_bundle(path)


def test_torch_checkpoint_is_not_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(BundleError, match="not a recinet model bundle"):
        load_bundle(path)


def test_plain_safetensors_without_description_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(BundleError, match="a safetensors file, but not a recinet model bundle"):
        read_bundle_info(path)
    with pytest.raises(BundleError, match="no such model bundle"):
        read_bundle_info(tmp_path / "absent.safetensors")


@pytest.mark.parametrize(
    ("description", "match"),
    [
        ("{not json", "corrupted bundle description"),
        ("[1, 2]", "corrupted bundle description"),
        (json.dumps({"format_version": BUNDLE_VERSION + 1}), "newer than this recinet reads"),
        (json.dumps({"format_version": 1}), "no valid model config"),
        (json.dumps({"format_version": 1, "model_config": {"hidden": -4}}), "no valid model config"),
    ],
)
def test_damaged_descriptions_are_bundle_errors(tmp_path: Path, description: str, match: str) -> None:
    from safetensors.torch import save_file

    from recinet_cli.bundle import _weights_sha256

    tensors = {"w": torch.zeros(2)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": BUNDLE_FORMAT, "recinet": description,
                                            "weights_sha256": _weights_sha256(tensors)})
    with pytest.raises(BundleError, match=match):
        load_bundle(path)


def test_weights_that_do_not_fit_the_config(tmp_path: Path, batch: Batch) -> None:
    wrong = {**INFO, "model_config": ModelConfig(hidden=24, blocks=1, rbf_bins=16, filter_rbf=8,
                                                 targets=("bandgap",)).to_dict()}
    path = save_bundle(tmp_path / "m.safetensors", trained_like_model(batch), wrong)
    with pytest.raises(BundleError, match="weights do not fit the stored model config"):
        load_bundle(path)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path, batch: Batch) -> None:
    target = tmp_path / "m.safetensors"
    save_bundle(target, trained_like_model(batch), INFO)
    save_bundle(target, trained_like_model(batch), {**INFO, "task": "folder:other"})  # overwrite
    assert read_bundle_info(target)["task"] == "folder:other"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


# ----------------------------------------------------------------------------- the store


def test_store_location_follows_recinet_home_and_models_dir(bundle: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    home = Path(os.environ["RECINET_HOME"])
    assert models_dir() == home / "models"
    elsewhere = tmp_path / "my-models"
    monkeypatch.setenv("RECINET_MODELS_DIR", str(elsewhere))
    assert models_dir() == elsewhere
    entry = register(bundle, "tiny")
    assert entry.path == elsewhere / "tiny" / "model.safetensors"
    assert entry.path.read_bytes() == bundle.read_bytes()
    assert entry.info is not None and entry.info["task"] == "folder:bandgap" and entry.error is None
    assert not (home / "models").exists()
    assert [e.name for e in list_models()] == ["tiny"]
    monkeypatch.delenv("RECINET_MODELS_DIR")
    assert list_models() == []


def test_register_twice_and_free_names(bundle: Path) -> None:
    assert free_name("tiny") == "tiny"
    register(bundle, "tiny")
    with pytest.raises(StoreError, match="a model named 'tiny' already exists"):
        register(bundle, "tiny")
    assert free_name("tiny") == "tiny-2"
    register(bundle, free_name("tiny"))
    assert free_name("tiny") == "tiny-3"
    assert [e.name for e in list_models()] == ["tiny", "tiny-2"]
    # overwrite replaces the entry in one step
    register(bundle, "tiny", overwrite=True)
    assert [e.name for e in list_models()] == ["tiny", "tiny-2"]
    assert not [p for p in models_dir().iterdir() if ".tmp-" in p.name]


def test_register_refuses_a_non_bundle(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk" * 100)
    with pytest.raises(BundleError):
        register(junk, "junk")
    assert not models_dir().exists() or list_models() == []


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "a/b", "../escape", "a b", "x\n", "tiny\x00", "é",
                                  "run.tmp-123"])
def test_invalid_names_are_rejected(bundle: Path, name: str) -> None:
    with pytest.raises(StoreError, match="model name"):
        check_name(name)
    with pytest.raises(StoreError, match="model name"):
        register(bundle, name)
    assert not models_dir().exists() or list(models_dir().iterdir()) == []


@pytest.mark.parametrize("name", ["a", "jarvis-ehull", "folder-bandgap+gap_opt", "v1.2_final", "9"])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


def test_get_resolve_remove(bundle: Path, tmp_path: Path) -> None:
    register(bundle, "tiny")
    assert get("tiny").info["name"] == "tiny"
    with pytest.raises(StoreError, match=r"no model 'other' in the store .*; registered: tiny$"):
        get("other")
    assert resolve("tiny") == models_dir() / "tiny" / "model.safetensors"
    assert resolve(str(bundle)) == bundle  # a bundle file
    assert resolve(str(bundle.parent)) == bundle  # a directory holding one
    assert remove("tiny") == models_dir() / "tiny"
    assert list_models() == []
    with pytest.raises(StoreError, match="registered: none"):
        get("tiny")


def break_store(bundle: Path) -> None:
    """A good model, a damaged bundle, a foreign file, an empty folder and a stray file."""
    register(bundle, "good")
    root = models_dir()
    (root / "damaged").mkdir()
    raw = bundle.read_bytes()
    (root / "damaged" / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    (root / "foreign").mkdir()
    (root / "foreign" / "model.safetensors").write_bytes(b"hello")
    (root / "empty").mkdir()
    (root / "README").write_text("not a model")


def test_list_reports_unreadable_entries_instead_of_crashing(bundle: Path) -> None:
    break_store(bundle)
    entries = {e.name: e for e in list_models()}
    assert sorted(entries) == ["damaged", "empty", "foreign", "good"]
    assert entries["good"].error is None and entries["good"].info["task"] == "folder:bandgap"
    for name in ("damaged", "foreign"):
        assert entries[name].info is None and "not a recinet model bundle" in entries[name].error
    assert "no such model bundle" in entries["empty"].error


# ----------------------------------------------------------------------------- `recinet models`


def test_models_cli_list_show_remove(bundle: Path) -> None:
    res = invoke(["models", "list"])
    assert res.exit_code == 0 and "no models in" in res.stdout
    register(bundle, "tiny")
    res = invoke(["models", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert rows == [{"name": "tiny", "group": "", "task": "folder:bandgap", "targets": "bandgap (eV)", "dataset": "folder local",
                     "val_mae": "bandgap 0.4", "test_mae": "bandgap 0.5", "created": "2026-01-01T00:00:00+0000", "error": None}]
    res = invoke(["models", "show", "tiny"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert "task: folder:bandgap" in lines and "test bandgap: MAE 0.5, RMSE 0.7, n 5" in lines
    assert f"bundle: {models_dir() / 'tiny' / 'model.safetensors'}" in lines
    res = invoke(["models", "show", "tiny", "--json"])
    assert json.loads(res.stdout)["model_config"] == CONFIG.to_dict()
    # remove asks first
    res = CliRunnerInput.invoke(["models", "remove", "tiny"], "n\n")
    assert res.exit_code == 1 and (models_dir() / "tiny").is_dir()
    res = invoke(["models", "remove", "tiny", "--yes"])
    assert res.exit_code == 0 and "removed tiny" in res.stdout
    assert not (models_dir() / "tiny").exists()
    assert "no model 'tiny'" in error_message(invoke(["models", "show", "tiny"]))
    assert "no model 'tiny'" in error_message(invoke(["models", "remove", "tiny", "--yes"]))
    assert "model name '../x'" in error_message(invoke(["models", "show", "../x"]))


def test_models_cli_with_a_broken_store(bundle: Path) -> None:
    break_store(bundle)
    res = invoke(["models", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert sorted(rows) == ["damaged", "empty", "foreign", "good"]
    assert rows["good"]["error"] is None and rows["good"]["task"] == "folder:bandgap"
    assert "not a recinet model bundle" in rows["damaged"]["error"] and rows["damaged"]["task"] == ""
    res = invoke(["models", "list"])
    assert res.exit_code == 0 and "unreadable:" in res.stdout and "good" in res.stdout
    assert "not a recinet model bundle" in error_message(invoke(["models", "show", "damaged"]))
    # every listed entry can be removed, including one whose bundle is missing
    for name in ("damaged", "foreign", "empty"):
        res = invoke(["models", "remove", name, "--yes"])
        assert res.exit_code == 0, res.output
    assert [e.name for e in list_models()] == ["good"]


class CliRunnerInput:
    """``recinet ARGS`` with text on stdin (for confirmation prompts)."""

    @staticmethod
    def invoke(args: list[str], text: str) -> Any:
        from typer.testing import CliRunner

        from recinet_cli.cli.app import app

        return CliRunner().invoke(app, args, input=text)


def test_store_survives_an_interrupted_copy(bundle: Path) -> None:
    """A temporary directory left by a killed ``register`` is not listed as a model."""
    register(bundle, "tiny")
    leftover = models_dir() / "other.tmp-4242"
    shutil.copytree(models_dir() / "tiny", leftover)
    assert [e.name for e in list_models()] == ["tiny"]
