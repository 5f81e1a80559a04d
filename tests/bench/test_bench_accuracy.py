"""``recinet bench accuracy`` / ``recinet bench ablation`` end to end on the real, bundled
Matbench jdft2d task (636 structures), with a tiny model and 1-2 epochs on CPU.

One finished 2-fold accuracy run (module fixture) is inspected by several tests; the resume
and ablation tests train their own (tiny) runs. The graph cache is shared by the session.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

import recinet_cli.train.engine as engine
from recinet_cli.bench.ablation import parse_variant
from recinet_cli.bench.accuracy import convert, mean_std
from recinet_cli.bench.runs import RunSettings, bench_config, config_differences, safe_name
from recinet_cli.errors import RecinetError
from tests.train.helpers import error_message, invoke, isolated_env, session_cache

TASK = "matbench:jdft2d"
#: Tiny model and schedule (the defaults are the paper's preset: 3 blocks, hidden 256, 500 epochs).
TINY = ["--blocks", "1", "--hidden", "16", "--epochs", "1"]


@dataclass(frozen=True)
class Bench:
    out: Path
    json: dict[str, Any]
    result: Result
    home: Path


def _read_preds(path: Path) -> list[tuple[str, float, float]]:
    with open(path, newline="") as fh:
        return [(r["id"], float(r["jdft2d_true"]), float(r["jdft2d_pred"])) for r in csv.DictReader(fh)]


def _official_folds() -> list[list[str]]:
    from recinet_matbench.splits import official_test_folds
    from recinet_matbench.tasks import resolve

    return official_test_folds(resolve("jdft2d"))


def _models(home: Path) -> list[Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECINET_HOME", str(home))
        from recinet_cli.modelstore import list_models

        return list_models()


@pytest.fixture(scope="module")
def acc(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    """``recinet bench accuracy --task matbench:jdft2d --folds 0,1 --epochs 1 --blocks 1
    --hidden 16 --out OUT --json OUT/acc.json``."""
    home = tmp_path_factory.mktemp("bench-acc-home")
    out = tmp_path_factory.mktemp("bench-acc") / "out"
    with pytest.MonkeyPatch.context() as mp:
        isolated_env(mp, home, session_cache(tmp_path_factory))
        result = invoke(["bench", "accuracy", "--task", TASK, "--folds", "0,1", *TINY, "--out", out,
                         "--json", out / "acc.json"])
    assert result.exit_code == 0, result.output
    return Bench(out, json.loads((out / "acc.json").read_text()), result, home)


# ----------------------------------------------------------------------------- pure helpers


def test_mean_std_is_the_sample_std() -> None:
    assert mean_std([1.0, 2.0, 4.0]) == (pytest.approx(7 / 3), pytest.approx(statistics.stdev([1.0, 2.0, 4.0])))
    assert mean_std([3.0]) == (3.0, None)


def test_unit_conversion() -> None:
    assert convert(16.1, "meV/atom", "eV/atom") == pytest.approx(0.0161)
    assert convert(0.043, "eV", "meV") == pytest.approx(43.0)
    assert convert(0.0328, "log(GPa)", "log10(GPa)") == 0.0328
    assert convert(1.0, "eV", "GPa") is None


def test_parse_variant() -> None:
    assert parse_variant("full").model == {} and parse_variant("full").blocks is None
    assert parse_variant("no-reciprocal").model == {"reciprocal": False}
    assert parse_variant("blocks=5").blocks == 5
    v = parse_variant("no-reciprocal+blocks=3")
    assert (v.blocks, v.model) == (3, {"reciprocal": False})
    assert parse_variant("kset=box").model == {"kset": "box"}
    assert parse_variant("gmax=2").model == {"gmax": 2.0}
    for bad in ("blocks=0", "gmax=-1", "colour=red", "bogus"):
        with pytest.raises(RecinetError):
            parse_variant(bad)


def test_bench_config_defaults_are_the_paper_preset(tmp_path: Path) -> None:
    cfg = bench_config(TASK, out=tmp_path / "r", fold=2)
    assert (cfg.blocks, cfg.epochs, cfg.lr, cfg.fold, cfg.register, dict(cfg.model)) == (3, 500, 1e-3, 2, False, {})
    other = bench_config(TASK, RunSettings(epochs=5, device="cpu"), out=tmp_path / "elsewhere", fold=2)
    assert config_differences(other.to_dict(), cfg) == ["epochs: 5 in the run, 500 requested"]
    assert safe_name("matbench:jdft2d") == "matbench-jdft2d" and safe_name("no-reciprocal+blocks=3") == "no-reciprocal_blocks-3"


# ----------------------------------------------------------------------------- accuracy


@pytest.mark.slow
def test_per_fold_scores_are_recomputed_from_test_predictions(acc: Bench) -> None:
    folds = acc.json["folds"]
    assert [f["fold"] for f in folds] == [0, 1]
    assert acc.json["epochs"] == 1 and acc.json["paper_epochs"] == 500 and acc.json["comparable_to_paper"] is False
    for f in folds:
        run = Path(f["run_dir"])
        assert run == acc.out / "matbench-jdft2d" / f"fold-{f['fold']}"
        rows = _read_preds(run / "test_predictions.csv")
        mae = math.fsum(abs(p - t) for _, t, p in rows) / len(rows)
        rmse = math.sqrt(math.fsum((p - t) ** 2 for _, t, p in rows) / len(rows))
        got = f["test"]["jdft2d"]
        assert got["mae"] == pytest.approx(mae, rel=1e-12) and got["rmse"] == pytest.approx(rmse, rel=1e-12)
        assert got["n"] == len(rows)
        # ... and agrees with the engine's own evaluation (CSV rounds to 8 digits)
        results = json.loads((run / "results.json").read_text())
        assert got["mae"] == pytest.approx(results["test"]["jdft2d"]["mae"], rel=1e-5)
        assert json.loads((run / "config.json").read_text())["fold"] == f["fold"]


@pytest.mark.slow
def test_mean_and_std_over_folds(acc: Bench) -> None:
    maes = [f["test"]["jdft2d"]["mae"] for f in acc.json["folds"]]
    rmses = [f["test"]["jdft2d"]["rmse"] for f in acc.json["folds"]]
    s = acc.json["summary"]["jdft2d"]
    assert s["mae"] == pytest.approx(statistics.fmean(maes)) and s["mae_std"] == pytest.approx(statistics.stdev(maes))
    assert s["rmse"] == pytest.approx(statistics.fmean(rmses)) and s["rmse_std"] == pytest.approx(statistics.stdev(rmses))
    paper = acc.json["paper"]["jdft2d"]
    assert (paper["mae"], paper["mae_std"], paper["rmse"], paper["source"]) == (31.6, 6.3, 75.6, "Table 3")
    board = acc.json["leaderboard"]["jdft2d"]
    if board is not None:  # ../shared/data present
        assert board["best"] == ["coNGN", pytest.approx(36.16983)]
    out = acc.result.stdout
    assert "ReciNet (paper)" in out and "NOT comparable" in out and f"{s['mae']:.4g} ± " in out


@pytest.mark.slow
def test_matbench_results_file_layout(acc: Bench) -> None:
    d = json.loads(gzip.decompress((acc.out / "matbench-jdft2d" / "results.json.gz").read_bytes()))
    assert set(d) == {"@module", "@class", "version", "benchmark_name", "tasks", "user_metadata", "datestamp", "hash"}
    assert (d["@class"], d["benchmark_name"]) == ("MatbenchBenchmark", "matbench_v0.1")
    body = {k: v for k, v in d.items() if k != "hash"}
    assert d["hash"] == hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    task = d["tasks"]["matbench_jdft2d"]
    assert (task["@class"], task["dataset_name"], task["benchmark_name"]) == ("MatbenchTask", "matbench_jdft2d", "matbench_v0.1")
    assert set(task["results"]) == {"fold_0", "fold_1"}
    official = _official_folds()
    for k in (0, 1):
        fold = task["results"][f"fold_{k}"]
        assert set(fold) == {"data", "parameters", "scores"}
        assert set(fold["data"]) == set(official[k])  # every official test id, nothing else
        preds = {i: p for i, _, p in _read_preds(acc.out / "matbench-jdft2d" / f"fold-{k}" / "test_predictions.csv")}
        assert fold["data"] == preds
        assert set(fold["scores"]) == {"mae", "rmse", "mape", "max_error"}
        assert fold["scores"]["mae"] == pytest.approx(acc.json["folds"][k]["test"]["jdft2d"]["mae"])
        assert fold["parameters"]["epochs"] == 1 and fold["parameters"]["blocks"] == 1
    assert d["user_metadata"]["complete"] is False  # 2 of 5 folds
    info = json.loads((acc.out / "matbench-jdft2d" / "info.json").read_text())
    assert {"authors", "algorithm", "algorithm_long", "bibtex_refs", "notes", "requirements"} <= set(info)
    assert info["algorithm"] == "ReciNet" and "not comparable" in info["notes"]


@pytest.mark.slow
def test_model_store_untouched(acc: Bench) -> None:
    assert _models(acc.home / "recinet") == []
    for k in (0, 1):
        run = acc.out / "matbench-jdft2d" / f"fold-{k}"
        assert not (run / "registered.json").exists()
        assert json.loads((run / "config.json").read_text())["register"] is False


@pytest.mark.slow
def test_rerun_reuses_finished_runs(acc: Bench, tmp_path_factory: pytest.TempPathFactory,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    isolated_env(monkeypatch, acc.home, session_cache(tmp_path_factory))

    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(engine, "train", no_training)
    again = tmp_path_factory.mktemp("again") / "acc.json"
    res = invoke(["bench", "accuracy", "--task", TASK, "--folds", "0,1", *TINY, "--out", acc.out, "--json", again])
    assert res.exit_code == 0, res.output
    assert res.stderr.count("finished run reused") == 2
    second = json.loads(again.read_text())
    assert [f["status"] for f in second["folds"]] == ["reused", "reused"]
    assert second["summary"] == acc.json["summary"]
    # other settings in the same directory: a clear error, nothing overwritten
    res = invoke(["bench", "accuracy", "--task", TASK, "--folds", "0", "--blocks", "1", "--hidden", "16",
                  "--epochs", "2", "--out", acc.out])
    assert "epochs: 1 in the run, 2 requested" in error_message(res)


@pytest.mark.slow
def test_interrupted_run_resumes(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECINET_CACHE_DIR", str(session_cache(tmp_path_factory)))
    args = ["bench", "accuracy", "--task", TASK, "--folds", "0", "--blocks", "1", "--hidden", "16",
            "--epochs", "2", "--out", tmp_path / "out", "--json", tmp_path / "acc.json"]
    real_save = engine.save_checkpoint

    def killed_after_epoch_1(path: Path, state: dict[str, Any]) -> None:
        real_save(path, state)
        if Path(path).name == "last.pt" and state.get("epoch") == 1:
            raise RuntimeError("killed")

    monkeypatch.setattr(engine, "save_checkpoint", killed_after_epoch_1)
    res = invoke(args)
    assert res.exit_code != 0
    run = tmp_path / "out" / "matbench-jdft2d" / "fold-0"
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "results.json").exists()
    monkeypatch.setattr(engine, "save_checkpoint", real_save)

    calls: list[bool] = []
    real_train = engine.train

    def spy(cfg: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("resume", False))
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(engine, "train", spy)
    res = invoke(args)
    assert res.exit_code == 0, res.output
    assert calls == [True]
    assert "resuming the interrupted run" in res.stderr and "resuming at epoch 2" in res.stderr
    out = json.loads((tmp_path / "acc.json").read_text())
    assert out["folds"][0]["status"] == "resumed"
    with open(run / "metrics.csv", newline="") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]
    from recinet_cli.modelstore import list_models

    assert list_models() == []  # this test's own (isolated) model store


# ----------------------------------------------------------------------------- ablation


@pytest.mark.slow
def test_ablation_one_row_per_variant_same_seed_and_split(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECINET_CACHE_DIR", str(session_cache(tmp_path_factory)))
    res = invoke(["bench", "ablation", "--task", TASK, "--variants", "full,no-reciprocal,gmax=2.0,blocks=1",
                  *TINY, "--seed", "7", "--out", tmp_path / "out", "--json", tmp_path / "abl.json"])
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "abl.json").read_text())
    rows = d["variants"]
    assert [r["variant"] for r in rows] == ["full", "no-reciprocal", "gmax=2.0", "blocks=1"]
    assert (d["fold"], d["seed"], d["epochs"]) == (0, 7, 1)
    assert len({json.dumps(r["split_ids_sha256"], sort_keys=True) for r in rows}) == 1  # same split
    configs = [json.loads((Path(r["run_dir"]) / "config.json").read_text()) for r in rows]
    assert {c["seed"] for c in configs} == {7} and {c["fold"] for c in configs} == {0}
    for c in configs:
        assert {k: v for k, v in c.items() if k not in ("model", "out")} == \
            {k: v for k, v in configs[0].items() if k not in ("model", "out")}
    assert [c["model"] for c in configs[:3]] == [{"hidden": 16}, {"hidden": 16, "reciprocal": False},
                                                 {"hidden": 16, "gmax": 2.0}]
    assert rows[3]["same_as"] == "full" and rows[3]["run_dir"] == rows[0]["run_dir"]  # --blocks 1 already
    assert rows[0]["delta_test_mae"] == 0.0
    assert rows[1]["delta_test_mae"] == pytest.approx(rows[1]["test_mae"] - rows[0]["test_mae"])
    assert rows[1]["params"] < rows[0]["params"] == rows[2]["params"]
    for r in rows:
        results = json.loads((Path(r["run_dir"]) / "results.json").read_text())
        assert r["test_mae"] == results["test"]["jdft2d"]["mae"] and r["val_mae"] == results["val"]["jdft2d"]["mae"]
        assert r["epoch_seconds"] > 0 and r["paper"] is None  # Tables 4/11 are JARVIS only
    assert "matbench:jdft2d ablation: fold 0, seed 7" in res.stdout and "NOT comparable" in res.stderr
