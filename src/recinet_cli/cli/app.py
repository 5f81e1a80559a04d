"""The ``recinet`` Typer application.

Each command lives in its own module and is registered here. Command modules import the
heavy libraries (torch, pymatgen, h5py) inside the command function, so ``recinet --help``
stays fast and torch-free.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from recinet_cli.cli import datasets as datasets_cmd
from recinet_cli.cli import export as export_cmd
from recinet_cli.cli import featurize as featurize_cmd
from recinet_cli.cli import plugins as plugins_cmd
from recinet_cli.cli import predict as predict_cmd
from recinet_cli.cli import train as train_cmd
from recinet_cli.cli.bench import bench_app
from recinet_cli.cli.common import print_error, state
from recinet_cli.cli.models import models_app


class _Group(TyperGroup):
    """Turns :class:`~recinet_cli.errors.RecinetError` into one line on stderr and an exit code.

    Doing it here (not in a wrapper around ``app()``) means ``CliRunner`` tests see exactly what
    users see.
    """

    def invoke(self, ctx: typer.Context) -> object:
        from recinet_cli.errors import RecinetError

        try:
            return super().invoke(ctx)
        except RecinetError as exc:
            if state.debug:
                raise
            print_error(str(exc))
            ctx.exit(exc.exit_code)


app = typer.Typer(
    name="recinet",
    cls=_Group,
    help="ReciNet: predict crystal properties from structure files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        from recinet_cli import __version__

        typer.echo(f"recinet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """ReciNet: predict crystal properties from structure files."""
    state.debug = debug


app.command("featurize")(featurize_cmd.featurize)
app.command("train")(train_cmd.train)
app.command("predict")(predict_cmd.predict)
app.command("export")(export_cmd.export)
app.command("datasets")(datasets_cmd.datasets)
app.command("plugins")(plugins_cmd.plugins)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
