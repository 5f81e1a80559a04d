"""``recinet plugins``: list the installed dataset and head plugins."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from recinet_cli.cli.common import console

if TYPE_CHECKING:
    from recinet_cli.registry import PluginEntry

#: Column order of the table and keys of each JSON object.
COLUMNS = ("kind", "name", "distribution", "version", "description")


def _row(entry: PluginEntry) -> dict[str, str]:
    """One plugin as a flat dict with the :data:`COLUMNS` keys."""
    return {
        "kind": entry.kind,
        "name": entry.name,
        "distribution": entry.distribution,
        "version": entry.version,
        "description": entry.description,
    }


def _print_table(rows: list[dict[str, str]]) -> None:
    """Print the plugins as a rich table (or a note when there are none)."""
    from rich.table import Table
    from rich.text import Text

    if not rows:
        console.print("no plugins installed", highlight=False)
        return
    table = Table(title="recinet plugins", title_justify="left")
    for column in COLUMNS:
        wrap = column == "description"
        table.add_column(column, no_wrap=not wrap, overflow="fold")
    for row in rows:
        table.add_row(*(Text(row[c]) for c in COLUMNS))  # no markup parsing
    console.print(table)


def plugins(
    json_output: bool = typer.Option(
        False, "--json", help="Print a JSON list of objects instead of a table."
    ),
) -> None:
    """List installed plugins (datasets and heads) with their distribution and version."""
    from recinet_cli import registry

    rows = [_row(entry) for entry in registry.list_plugins()]
    if json_output:
        text = json.dumps(rows, indent=2)
        console.print(text, soft_wrap=True, markup=False, highlight=False, emoji=False)
        return
    _print_table(rows)
