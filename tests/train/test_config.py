"""The resolved training configuration and task strings (no training here).

``resolve`` merges, lowest first: TrainConfig defaults < dataset preset < config file
(TOML or JSON) < command-line flags; ``model`` tables merge key by key.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from recinet_cli.errors import PluginError, RecinetError
from recinet_cli.registry import discover
from recinet_cli.train.config import (
    MODEL_KEYS,
    TrainConfig,
    from_mapping,
    read_config_file,
    resolve,
    write_config,
)
from recinet_cli.train.tasks import parse_task

TASK = "folder:bandgap"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- precedence


def test_defaults_when_nothing_is_given() -> None:
    cfg = resolve(TASK, {}, {}, {})
    expected = TrainConfig(task=TASK)
    assert cfg == expected
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.blocks, cfg.seed) == (500, 1e-3, 64, 4, 123)
    assert (cfg.precision, cfg.device, cfg.gpus, cfg.nprocs, cfg.register) == ("auto", "auto", 0, 1, True)
    assert cfg.model == {} and cfg.patience is None and cfg.clip_grad is None


def test_each_layer_overrides_the_one_below() -> None:
    preset = {"epochs": 300, "lr": 5e-4, "blocks": 3, "weight_decay": 0.0}
    file_values = {"epochs": 200, "lr": 2e-4, "seed": 7}
    flags = {"epochs": 20, "seed": None, "batch_size": None, "out": "RUN"}
    cfg = resolve(TASK, preset, file_values, flags)
    assert cfg.epochs == 20  # flag > file > preset
    assert cfg.lr == 2e-4  # file > preset (flag absent)
    assert cfg.seed == 7  # a flag given as None does not override the file
    assert cfg.blocks == 3 and cfg.weight_decay == 0.0  # preset > defaults
    assert cfg.batch_size == 64  # default
    assert cfg.out == "RUN"


def test_model_tables_merge_key_by_key() -> None:
    preset = {"model": {"hidden": 128, "kset": "box", "box": [1, 1, 1]}}
    file_values = {"model": {"hidden": 64, "gmax": 3.0}}
    flags = {"model": {"gmax": 2.0, "head": "mt-ls"}}
    cfg = resolve(TASK, preset, file_values, flags)
    assert cfg.model == {"hidden": 64, "kset": "box", "box": [1, 1, 1], "gmax": 2.0, "head": "mt-ls"}


def test_task_argument_overrides_the_file_and_file_task_is_used_otherwise() -> None:
    assert resolve("folder:x", {}, {"task": "folder:y"}, {}).task == "folder:x"
    assert resolve(None, {}, {"task": "folder:y"}, {}).task == "folder:y"
    with pytest.raises(RecinetError, match="no task"):
        resolve(None, {}, {"epochs": 3}, {})


def test_toml_file_between_preset_and_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path / "run.toml",
        'task = "folder:bandgap"\nepochs = 40\nlr = 0.002\nprecision = "bf16"\n'
        "[model]\nhidden = 48\nreciprocal = false\n",
    )
    file_values = read_config_file(path)
    assert file_values == {"task": TASK, "epochs": 40, "lr": 0.002, "precision": "bf16",
                           "model": {"hidden": 48, "reciprocal": False}}
    cfg = resolve(None, {"epochs": 500, "lr": 1e-3, "blocks": 5}, file_values, {"lr": 0.01})
    assert (cfg.epochs, cfg.lr, cfg.blocks, cfg.precision) == (40, 0.01, 5, "bf16")
    assert cfg.model == {"hidden": 48, "reciprocal": False}


def test_json_file_works_like_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "run.json", json.dumps({"task": TASK, "epochs": 40, "model": {"hidden": 48}}))
    cfg = resolve(None, {"blocks": 2}, read_config_file(path), {"epochs": 3})
    assert (cfg.epochs, cfg.blocks, cfg.model) == (3, 2, {"hidden": 48})


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_unknown_key_in_config_file_is_named(tmp_path: Path, suffix: str) -> None:
    text = 'task = "folder:bandgap"\nepoch = 3\n' if suffix == ".toml" else '{"task": "folder:bandgap", "epoch": 3}'
    values = read_config_file(write(tmp_path / f"c{suffix}", text))
    with pytest.raises(RecinetError) as info:
        resolve(None, {}, values, {})
    msg = str(info.value)
    assert "unknown key(s) epoch;" in msg and "epochs" in msg  # names the bad key and the valid ones


def test_unknown_model_key_is_named(tmp_path: Path) -> None:
    values = read_config_file(write(tmp_path / "c.toml", 'task = "folder:bandgap"\n[model]\nhiden = 3\n'))
    with pytest.raises(RecinetError, match=r"model unknown key\(s\) hiden; valid: hidden"):
        resolve(None, {}, values, {})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("epochs = [1\n", "not valid TOML"),
        ("= 3\n", "not valid TOML"),
    ],
)
def test_malformed_toml_is_a_one_line_error(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(RecinetError, match=match):
        read_config_file(write(tmp_path / "c.toml", text))


def test_malformed_or_missing_json(tmp_path: Path) -> None:
    with pytest.raises(RecinetError, match="not valid JSON"):
        read_config_file(write(tmp_path / "c.json", "{epochs: 3}"))
    with pytest.raises(RecinetError, match="expected a table of settings"):
        read_config_file(write(tmp_path / "l.json", "[1, 2]"))
    with pytest.raises(RecinetError, match="cannot read config file"):
        read_config_file(tmp_path / "absent.toml")


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"blocks": -1}, "blocks must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"weight_decay": -1e-5}, "weight_decay must be >= 0"),
        ({"precision": "fp16"}, "precision must be auto, fp32 or bf16, got 'fp16'"),
        ({"device": "tpu"}, "device must be auto, cpu or cuda"),
        ({"gpus": 1, "nprocs": 2}, "nprocs is for CPU runs"),
        ({"gpus": -1}, "must be >= 0"),
        ({"patience": 0}, "patience must be >= 1"),
        ({"clip_grad": 0.0}, "clip_grad must be > 0"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "non-empty training set"),
        ({"val_fraction": 0.0}, "non-empty training set"),
        ({"test_fraction": 0.0}, "must each be in \\(0, 1\\)"),
        ({"seed": -1}, "seed must be in 0..2\\*\\*32-1"),
        # wrong types, as a config file can hold them
        ({"epochs": "5"}, "epochs must be an integer, got '5'"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"batch_size": True}, "batch_size must be an integer"),
        ({"lr": "0.1"}, "lr must be a number"),
        ({"register": "no"}, "register must be true or false"),
        ({"model": "big"}, "model must be a table"),
    ],
)
def test_invalid_values_are_refused(values: dict, match: str) -> None:
    with pytest.raises(RecinetError, match=match):
        resolve(TASK, {}, values, {})


def test_valid_edge_values_are_accepted() -> None:
    cfg = resolve(TASK, {}, {"lr": 1, "gpus": 2, "nprocs": 1, "test_fraction": 0.05, "clip_grad": 1}, {})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)  # TOML ``lr = 1`` is an integer
    assert cfg.world_size == 2
    assert resolve(TASK, {}, {"nprocs": 3}, {}).world_size == 3


def test_path_values_become_strings(tmp_path: Path) -> None:
    cfg = TrainConfig(task=TASK, data=tmp_path, out=tmp_path / "run")  # type: ignore[arg-type]
    assert cfg.data == str(tmp_path) and cfg.out == str(tmp_path / "run")
    json.dumps(cfg.to_dict())  # serialisable


def test_from_mapping_requires_a_task() -> None:
    with pytest.raises(RecinetError, match="no task"):
        from_mapping({"epochs": 3})


# ----------------------------------------------------------------------------- round trip


def test_to_dict_round_trips_through_from_mapping_and_json(tmp_path: Path) -> None:
    cfg = TrainConfig(
        task="folder:a,b", data="/data", fold=2, epochs=7, lr=3e-4, batch_size=16, weight_decay=0.0,
        blocks=2, model={"hidden": 64, "head": "mt-moe", "head_options": {"top_k": 1}, "box": [1, 2, 3]},
        seed=99, deterministic=True, clip_grad=1.5, precision="bf16", patience=4, val_fraction=0.2,
        test_fraction=0.15, device="cpu", gpus=0, nprocs=2, num_workers=1, out="RUN", name="m1",
        register=False, tensorboard=True,
    )
    d = cfg.to_dict()
    assert set(d) == {f.name for f in fields(TrainConfig)}
    assert from_mapping(d) == cfg
    write_config(cfg, tmp_path / "config.json")
    again = read_config_file(tmp_path / "config.json")
    assert again == d
    assert from_mapping(again) == cfg
    # and as a --config file (the file layer), flags still win
    assert resolve(None, {}, again, {"epochs": 1}) == TrainConfig(**{**d, "epochs": 1})


def test_model_keys_are_model_config_fields() -> None:
    from recinet_cli.model.config import ModelConfig

    assert set(MODEL_KEYS) <= {f.name for f in fields(ModelConfig)}
    assert "blocks" not in MODEL_KEYS and "targets" not in MODEL_KEYS


# ----------------------------------------------------------------------------- tasks


def test_parse_task_resolves_dataset_and_properties() -> None:
    task = parse_task("folder:bandgap")
    assert task.dataset.name == "folder"
    assert task.names == ("bandgap",)
    assert task.label == "folder:bandgap"
    assert task.default_name == "folder-bandgap"
    multi = parse_task(" folder : gap , e_form ")
    assert multi.names == ("gap", "e_form") and multi.default_name == "folder-gap+e_form"


@pytest.mark.parametrize("text", ["bandgap", "folder", ":bandgap", "folder:", "folder: , ", ""])
def test_malformed_task_text(text: str) -> None:
    with pytest.raises(RecinetError, match=r"expected DATASET:PROP\[,PROP\.\.\.\]"):
        parse_task(text)


def test_unknown_dataset_lists_installed_ones() -> None:
    with pytest.raises(PluginError) as info:
        parse_task("nosuchdataset:gap")
    msg = str(info.value)
    assert "unknown dataset 'nosuchdataset'" in msg
    installed = sorted(discover("recinet.datasets"))
    assert {"folder", "h5"} <= set(installed)
    assert f"installed: {', '.join(installed)}" in msg


def test_repeated_property_is_refused() -> None:
    with pytest.raises(RecinetError, match="property 'gap' is requested twice"):
        parse_task("folder:gap,e_form,gap")


def test_alias_of_the_same_property_counts_as_repeated() -> None:
    if "jarvis" not in discover("recinet.datasets"):
        pytest.skip("the recinet-jarvis plugin is not installed")
    task = parse_task("jarvis:optb88vdw_bandgap")
    assert task.names == ("bandgap_opt",)  # alias -> canonical name
    with pytest.raises(RecinetError, match="property 'bandgap_opt' is requested twice"):
        parse_task("jarvis:bandgap_opt,optb88vdw_bandgap")


def test_unknown_property_of_a_fixed_property_dataset_lists_valid_ones() -> None:
    if "jarvis" not in discover("recinet.datasets"):
        pytest.skip("the recinet-jarvis plugin is not installed")
    with pytest.raises(PluginError) as info:
        parse_task("jarvis:no_such_prop")
    msg = str(info.value)
    assert "no property 'no_such_prop'" in msg
    from recinet_cli.registry import get_dataset

    valid = [p.name for p in get_dataset("jarvis").properties()]
    assert f"valid: {', '.join(valid)}" in msg
