"""Which model serves which property (``recinet_cli.prediction.resolve``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recinet_cli.prediction.resolve import PredictError, plan_columns
from tests.bundles import make_bundle, store_bundle


def served(plan) -> dict[str, tuple[str, list[str]]]:  # type: ignore[no-untyped-def]
    """{column: (label, [member model names])}."""
    return {c.name: (c.label, [m.name for m, _ in c.members]) for c in plan.columns}


def test_aliases_resolve_to_the_canonical_name(tmp_path: Path) -> None:
    store_bundle("mbj", tmp_path, ["bandgap_mbj"])
    for asked in ("bandgap_mbj", "mbj_bandgap", "MBJ_GAP", "jarvis:mbj_bandgap"):
        plan = plan_columns([asked])
        assert served(plan) == {"bandgap_mbj": ("mbj", ["mbj"])}, asked
        assert plan.columns[0].unit == "eV"
    # two names of one property give one column
    assert [c.name for c in plan_columns(["bandgap_mbj", "mbj_bandgap"]).columns] == ["bandgap_mbj"]


def test_best_validation_mae_wins_among_single_task_models(tmp_path: Path) -> None:
    store_bundle("mbj-a", tmp_path, ["bandgap_mbj"], val_mae={"bandgap_mbj": 0.40})
    store_bundle("mbj-b", tmp_path, ["bandgap_mbj"], val_mae={"bandgap_mbj": 0.31})
    store_bundle("mbj-c", tmp_path, ["bandgap_mbj"], val_mae={"bandgap_mbj": 0.55})
    assert served(plan_columns(["bandgap_mbj"])) == {"bandgap_mbj": ("mbj-b", ["mbj-b"])}


def test_one_multi_task_model_is_preferred_over_several_single_task_models(tmp_path: Path) -> None:
    store_bundle("mt", tmp_path, ["bandgap_mbj", "bandgap_opt", "formation_energy"],
                 val_mae={"bandgap_mbj": 0.5, "bandgap_opt": 0.4, "formation_energy": 0.1})
    store_bundle("mbj", tmp_path, ["bandgap_mbj"], val_mae={"bandgap_mbj": 0.3})
    store_bundle("opt", tmp_path, ["bandgap_opt"], val_mae={"bandgap_opt": 0.2})
    store_bundle("ehull", tmp_path, ["ehull"], val_mae={"ehull": 0.05})
    plan = plan_columns(["bandgap_mbj", "bandgap_opt", "ehull"])
    assert served(plan) == {"bandgap_mbj": ("mt", ["mt"]), "bandgap_opt": ("mt", ["mt"]), "ehull": ("ehull", ["ehull"])}
    assert [m.name for m in plan.models] == ["mt", "ehull"]  # each model loaded once
    # asked alone, the better single-task model wins
    assert served(plan_columns(["bandgap_mbj"]))["bandgap_mbj"][0] == "mbj"


def test_between_multi_task_models_the_relative_validation_mae_decides(tmp_path: Path) -> None:
    store_bundle("mt-a", tmp_path, ["bandgap_mbj", "bandgap_opt"], val_mae={"bandgap_mbj": 0.50, "bandgap_opt": 0.20})
    store_bundle("mt-b", tmp_path, ["bandgap_mbj", "bandgap_opt"], val_mae={"bandgap_mbj": 0.30, "bandgap_opt": 0.25})
    # mt-a: (0.5/0.3 + 0.2/0.2)/2 = 1.33; mt-b: (1 + 1.25)/2 = 1.125
    assert served(plan_columns(["bandgap_mbj", "bandgap_opt"]))["bandgap_opt"][0] == "mt-b"


def test_models_of_one_group_form_an_ensemble(tmp_path: Path) -> None:
    for seed in range(3):
        store_bundle(f"ef-{seed}", tmp_path, ["formation_energy"], group="ef", seed=seed,
                     val_mae={"formation_energy": 0.10 + 0.01 * seed})
    store_bundle("ef-single", tmp_path, ["formation_energy"], val_mae={"formation_energy": 0.2})
    plan = plan_columns(["formation_energy"])
    assert served(plan) == {"formation_energy": ("ef", ["ef-0", "ef-1", "ef-2"])}
    assert plan.columns[0].ensemble
    # --model GROUP names the same ensemble, --model NAME one member
    assert served(plan_columns(["formation_energy"], ["ef"]))["formation_energy"][1] == ["ef-0", "ef-1", "ef-2"]
    assert served(plan_columns(["formation_energy"], ["ef-1"]))["formation_energy"] == ("ef-1", ["ef-1"])


def test_explicit_models_override_the_store_and_several_average(tmp_path: Path) -> None:
    store_bundle("best", tmp_path, ["bandgap_mbj"], val_mae={"bandgap_mbj": 0.01})
    a = make_bundle(tmp_path / "a.safetensors", ["bandgap_mbj"], val_mae={"bandgap_mbj": 0.9})
    b_dir = tmp_path / "run-b"
    make_bundle(b_dir / "model.safetensors", ["bandgap_mbj", "bandgap_opt"], seed=3)
    plan = plan_columns(["bandgap_mbj"], [str(a), str(b_dir)])
    assert served(plan) == {"bandgap_mbj": ("a+run-b", ["a", "run-b"])}
    # properties the explicit models do not predict still come from the store
    store_bundle("ehull", tmp_path, ["ehull"])
    assert served(plan_columns(["bandgap_mbj", "ehull"], [str(a)])) == {
        "bandgap_mbj": ("a", ["a"]), "ehull": ("ehull", ["ehull"])}
    # without --props: everything the given models predict, in their order
    assert [c.name for c in plan_columns([], [str(b_dir)]).columns] == ["bandgap_mbj", "bandgap_opt"]


def test_dataset_prefix_restricts_the_candidates(tmp_path: Path) -> None:
    store_bundle("jarvis-ef", tmp_path, ["formation_energy"], dataset="jarvis", val_mae={"formation_energy": 0.3})
    store_bundle("mp-ef", tmp_path, ["formation_energy"], dataset="mp", val_mae={"formation_energy": 0.02})
    assert served(plan_columns(["formation_energy"]))["formation_energy"][0] == "mp-ef"
    assert served(plan_columns(["jarvis:formation_energy"]))["formation_energy"][0] == "jarvis-ef"
    with pytest.raises(PredictError, match="no model predicts 'matbench:formation_energy'"):
        plan_columns(["matbench:formation_energy"])


def test_a_property_no_model_predicts_says_how_to_train_one(tmp_path: Path) -> None:
    store_bundle("mbj", tmp_path, ["bandgap_mbj"])
    with pytest.raises(PredictError) as err:
        plan_columns(["bandgap_mbj", "e_hull"])
    msg = str(err.value)
    assert "no model predicts 'e_hull'" in msg
    assert "`recinet train --task jarvis:ehull`" in msg  # the alias resolved by the plugin
    assert "the store can serve: bandgap_mbj (eV)" in msg
    with pytest.raises(PredictError, match=r"no installed dataset provides it .*recinet train --task folder:hardness --data DIR"):
        plan_columns(["hardness"])


def test_empty_store_and_nothing_requested(tmp_path: Path) -> None:
    with pytest.raises(PredictError, match="no model predicts 'bandgap_mbj'.*the store can serve: nothing yet"):
        plan_columns(["bandgap_mbj"])
    with pytest.raises(PredictError, match="nothing to predict: pass --props"):
        plan_columns([])


def test_bad_model_options(tmp_path: Path) -> None:
    store_bundle("mbj", tmp_path, ["bandgap_mbj"])
    with pytest.raises(PredictError, match=r"--model nope: no such file, model or group; the store has: mbj"):
        plan_columns(["bandgap_mbj"], ["nope"])
    with pytest.raises(PredictError, match=r"--model mbj predicts bandgap_mbj, none of the requested properties \(ehull\)"):
        plan_columns(["ehull"], ["mbj"])


def test_models_that_disagree_on_the_unit_are_not_averaged(tmp_path: Path) -> None:
    from recinet_cli.bundle import load_bundle, save_bundle

    a = make_bundle(tmp_path / "a.safetensors", ["bandgap_mbj"])
    model, info = load_bundle(make_bundle(tmp_path / "b.safetensors", ["bandgap_mbj"]))
    info["targets"][0]["unit"] = "meV"
    b = save_bundle(tmp_path / "b-mev.safetensors", model, info)
    with pytest.raises(PredictError, match=r"bandgap_mbj: the models a\+b-mev disagree on the unit \(eV, meV\)"):
        plan_columns(["bandgap_mbj"], [str(a), str(b)])


def test_unreadable_store_entries_are_skipped(tmp_path: Path) -> None:
    good = store_bundle("good", tmp_path, ["bandgap_mbj"])
    bad = store_bundle("bad", tmp_path, ["bandgap_mbj"], val_mae={"bandgap_mbj": 0.001})
    bad.write_bytes(b"not a bundle")
    assert served(plan_columns(["bandgap_mbj"]))["bandgap_mbj"][0] == "good"
    assert good.is_file()
