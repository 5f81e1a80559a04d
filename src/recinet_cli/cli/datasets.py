"""``recinet datasets``: every dataset plugin's properties with units and sizes."""

from __future__ import annotations

import json

import typer

from recinet_cli.cli.common import console, print_error

COLUMNS = ("dataset", "version", "property", "unit", "size", "aliases", "description")
#: What the terminal table shows (the JSON has every column).
TABLE_COLUMNS = ("dataset", "property", "unit", "size", "aliases")


def dataset_rows() -> list[dict[str, object]]:
    """One row per (dataset, property); a plugin that fails to describe itself is reported."""
    from recinet_cli import registry

    rows: list[dict[str, object]] = []
    for entry in registry.list_plugins():
        if entry.kind != "dataset":
            continue
        try:
            plugin = registry.get_dataset(entry.name)
            props = plugin.properties()
        except Exception as exc:  # a broken third-party plugin must not hide the others
            print_error(f"dataset plugin {entry.name!r}: {exc}")
            continue
        version = plugin.dataset_version + (f" ({plugin.folds} folds)" if plugin.folds else "")
        for p in props:
            rows.append({"dataset": entry.name, "version": version, "property": p.name, "unit": p.unit,
                         "size": p.size, "aliases": ", ".join(p.aliases), "description": p.description})
    return rows


def datasets(
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List the datasets and properties `recinet train --task DATASET:PROP` accepts."""
    from rich.table import Table
    from rich.text import Text

    rows = dataset_rows()
    if json_output:
        console.print(json.dumps(rows, indent=2), soft_wrap=True, markup=False, highlight=False, emoji=False)
        return
    table = Table(title="datasets (recinet train --task DATASET:PROP)", title_justify="left")
    for col in TABLE_COLUMNS:
        table.add_column(col, justify="right" if col == "size" else "left", overflow="fold")
    for row in rows:
        size = row["size"]
        cells = {
            "dataset": f"{row['dataset']} {row['version']}".strip(),
            "property": row["property"],
            "unit": row["unit"] or "-",
            "size": f"{size:,}" if size is not None else "-",
            "aliases": ", ".join(str(row["aliases"]).split(", ")[:3]),
        }
        table.add_row(*(Text(str(cells[c])) for c in TABLE_COLUMNS))
    console.print(table)
