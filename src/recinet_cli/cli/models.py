"""``recinet models list|show|remove``: the model store."""

from __future__ import annotations

import json
from typing import Any

import typer

from recinet_cli.cli.common import console, print_plain

models_app = typer.Typer(help="Trained models in the model store.", no_args_is_help=True)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_row(name: str, info: dict[str, Any] | None, error: str | None = None) -> dict[str, Any]:
    """A flat description of one stored model (what ``list`` shows)."""
    if info is None:
        return {"name": name, "group": "", "task": "", "targets": "", "dataset": "", "val_mae": "", "test_mae": "",
                "created": "", "error": error}
    val = info.get("metrics", {}).get("val", {})
    test = info.get("metrics", {}).get("test", {})
    targets = [f"{t['name']} ({t['unit']})" if t.get("unit") else t["name"] for t in info.get("targets", [])]
    ds = info.get("dataset", {})
    return {
        "name": name, "group": info.get("group") or "", "task": info.get("task", ""), "targets": ", ".join(targets),
        "dataset": f"{ds.get('name', '')} {ds.get('version', '')}".strip(),
        "val_mae": ", ".join(f"{p} {_fmt(m.get('mae'))}" for p, m in val.items()),
        "test_mae": ", ".join(f"{p} {_fmt(m.get('mae'))}" for p, m in test.items()),
        "created": info.get("created", ""), "error": None,
    }


@models_app.command("list")
def list_(json_output: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List registered models."""
    from rich.table import Table
    from rich.text import Text

    from recinet_cli.modelstore import list_models
    from recinet_cli.paths import models_dir

    rows = [summary_row(e.name, e.info, e.error) for e in list_models()]
    if json_output:
        console.print(json.dumps(rows, indent=2), soft_wrap=True, markup=False, highlight=False)
        return
    if not rows:
        print_plain(f"no models in {models_dir()} (train one with `recinet train --task ...`)")
        return
    table = Table(title=f"models in {models_dir()}", title_justify="left")
    columns = ("name", "group", "task", "val_mae", "test_mae")  # the rest: --json, `models show`
    for col in columns:
        table.add_column(col.replace("_", " "), overflow="fold")
    for r in rows:
        cells = [r[col] for col in columns]
        if r["error"]:
            cells = [r["name"], "", f"unreadable: {r['error']}", "", ""]
        table.add_row(*(Text(str(c)) for c in cells))
    console.print(table)


@models_app.command("show")
def show(
    name: str = typer.Argument(..., help="Model name (or a bundle path)."),
    json_output: bool = typer.Option(False, "--json", help="Print the full description as JSON."),
) -> None:
    """Show a model's description: task, targets, data, metrics, configs."""
    from recinet_cli.bundle import read_bundle_info
    from recinet_cli.modelstore import resolve

    path = resolve(name)
    info = read_bundle_info(path)
    if json_output:
        console.print(json.dumps(info, indent=2), soft_wrap=True, markup=False, highlight=False)
        return
    row = summary_row(name, info)
    ds = info.get("dataset", {})
    mc = info.get("model_config", {})
    lines = [
        f"name: {name}", f"bundle: {path}", f"task: {row['task']}", f"targets: {row['targets']}",
        f"dataset: {row['dataset']}, fold {ds.get('fold')}, split {ds.get('split')}, sizes {ds.get('sizes')}",
        f"model: {mc.get('blocks')} blocks, hidden {mc.get('hidden')}, head {mc.get('head')}, "
        f"reciprocal {mc.get('reciprocal')} ({mc.get('kset')}, gmax {mc.get('gmax')})",
        f"featurizer: {info.get('featurizer')} (hash {str(info.get('featurizer_hash'))[:12]})",
        f"best epoch: {info.get('metrics', {}).get('best_epoch')}",
    ]
    for split in ("val", "test"):
        for prop, m in info.get("metrics", {}).get(split, {}).items():
            lines.append(f"{split} {prop}: MAE {_fmt(m.get('mae'))}, RMSE {_fmt(m.get('rmse'))}, n {m.get('n')}")
    lines += [f"recinet: {info.get('recinet_version')}", f"created: {info.get('created')}"]
    for line in lines:
        print_plain(line)


@models_app.command("remove")
def remove(
    name: str = typer.Argument(..., help="Model name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a model from the store."""
    from recinet_cli.modelstore import get
    from recinet_cli.modelstore import remove as remove_model

    entry = get(name)
    if not yes and not typer.confirm(f"remove model {name!r} ({entry.path.parent})?"):
        raise typer.Exit(1)
    removed = remove_model(name)
    print_plain(f"removed {name} ({removed})")
