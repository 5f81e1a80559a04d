"""The ``recinet`` Typer application.

Each command lives in its own module and is registered here. Command modules import the
heavy libraries (torch, pymatgen, h5py) inside the command function, so ``recinet --help``
stays fast and torch-free.
"""

from __future__ import annotations

import sys

import typer

from recinet_cli.cli import featurize as featurize_cmd
from recinet_cli.cli import plugins as plugins_cmd
from recinet_cli.cli.common import console_err, state

app = typer.Typer(
    name="recinet",
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
app.command("plugins")(plugins_cmd.plugins)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning user errors into one-line messages."""
    from recinet_cli.errors import RecinetError

    try:
        app(args=argv, standalone_mode=False)
    except RecinetError as exc:
        if state.debug:
            raise
        console_err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console_err.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors and friends
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
