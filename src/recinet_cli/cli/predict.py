"""``recinet predict``: parse options, call :func:`recinet_cli.prediction.predict_inputs`, render."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from recinet_cli.cli.common import console, console_err, print_failure, print_plain
from recinet_cli.cli.featurize import Disorder, IdFrom
from recinet_cli.cli.progress import make_progress

if TYPE_CHECKING:
    from recinet_cli.prediction import Plan, PredictResult

#: Failures listed one per line on stderr before the rest are only counted.
MAX_LISTED_FAILURES = 20
#: Rows shown in the terminal table (all rows go to -o files and piped CSV).
MAX_TABLE_ROWS = 200


def predict(
    inputs: list[str] = typer.Argument(
        ..., help="Structure files, directories (searched recursively), glob patterns, or a graph file (.h5) from `recinet featurize`.",
        show_default=False,
    ),
    props: str | None = typer.Option(
        None, "--props", "-p", help="Comma-separated properties (names or aliases; DATASET:PROP to pick the dataset) \\[everything the --model models predict]."
    ),
    model: list[str] | None = typer.Option(
        None, "--model", "-m", help="Model store name, ensemble group or bundle path; repeatable (several models for a property are averaged, with a std column)."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write a .csv or .json file \\[a table on a terminal, CSV when piped]."
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Structures per forward pass."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast on CPUs with AMX/AVX512-BF16 and bf16 GPUs, else fp32), fp32 or bf16."),
    workers: int | None = typer.Option(
        None, "--workers", "-j", min=0, help="Featurization processes, overlapping inference (0 = in this process) \\[cores - 1]."
    ),
    id_from: IdFrom = typer.Option(IdFrom.stem, "--id-from", help="Structure id: file stem, file name, parent directory or relative path."),
    suffix_duplicates: bool = typer.Option(False, "--suffix-duplicates", help="Make duplicate ids unique (-2, -3...) instead of failing."),
    disorder: Disorder = typer.Option(Disorder.fail, "--disorder", help="Partially occupied sites: fail, or keep the majority species."),
) -> None:
    """Predict properties of crystal structures with the trained models of the model store.

    Each property is served by the best model in the store that predicts it (one multi-task
    model covering several requested properties is preferred); --model overrides. Graphs
    are built with each model's own featurizer settings. A structure that cannot be read
    or predicted gets a row with its error; the exit code is 1 when any structure failed.
    """
    from recinet_cli.prediction import gather_inputs, plan_columns, run_plan
    from recinet_cli.prediction.output import output_format, write_output
    from recinet_cli.structures.readers import ReadOptions

    if output is not None:
        output_format(output)  # refuse an unknown suffix before any work
    plan = plan_columns(props.split(",") if props else [], model or [])
    _print_plan(plan)
    items, failures = gather_inputs(inputs, plan, id_from.value, suffix_duplicates)
    result = run_plan(
        plan, items, failures=failures, device=device, batch_size=batch_size, precision=precision, workers=workers,
        options=ReadOptions(disorder.value), progress=make_progress("predicting", "inputs", "predicted"),
        journal_for=output,
    )
    failed = [r for r in result.rows if r["error"] is not None]
    for r in failed[:MAX_LISTED_FAILURES]:
        where = r["source"] + (f" [{r['id']}]" if r["id"] and r["id"] not in r["source"] else "")
        print_failure(where, r["error"])
    if len(failed) > MAX_LISTED_FAILURES:
        print_failure(f"{len(failed) - MAX_LISTED_FAILURES} more structures", "see the error column")
    if output is not None:
        write_output(result, output)
        result.finish_journal()  # an interrupted run resumes from OUTPUT.partial until here
        t = result.timings
        rate = t.structures / t.total if t.total > 0 else 0.0
        print_plain(
            f"wrote {output}: {len(result.rows) - len(failed)} predicted, {len(failed)} failed "
            f"({t.total:.1f} s, {rate:.0f} structures/s on {result.device}, {result.precision})"
        )
    elif console.is_terminal:
        _table(result)
    else:
        from recinet_cli.prediction.output import write_csv

        write_csv(result, sys.stdout)
        sys.stdout.flush()
    if failed:
        raise typer.Exit(1)


def _print_plan(plan: Plan) -> None:
    """One line per column on stderr: which model (or ensemble) produces it."""
    from recinet_cli.prediction.output import model_label

    for col in plan.columns:
        maes = [m.targets[i].val_mae for m, i in col.members]
        mae = sum(maes) / len(maes)
        note = f", validation MAE {mae:.4g} {col.unit}".rstrip() if mae != float("inf") else ""
        console_err.print(f"{col.name}: {model_label(col)}{note}", highlight=False, markup=False)


def _table(result: PredictResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    from recinet_cli.prediction.output import model_label, unit_label

    r = result
    table = Table(show_header=True, header_style="bold")
    table.add_column("id", overflow="fold")
    table.add_column("formula")
    for col in r.columns:
        table.add_column(escape(f"{unit_label(col.name, col.unit)}\n{model_label(col)}"), justify="right")
    table.add_column("error", overflow="fold")
    for row in r.rows[:MAX_TABLE_ROWS]:
        cells = [escape(row["id"]), escape(row["formula"])]
        for col in r.columns:
            v = row[col.name]
            text = "" if v != v else f"{v:.4g}"
            if col.ensemble and v == v:
                text += f" ± {row[f'{col.name}_std']:.2g}"
            cells.append(text)
        cells.append(escape(row["error"] or ""))
        table.add_row(*cells)
    console.print(table)
    hidden = len(r.rows) - MAX_TABLE_ROWS
    if hidden > 0:
        print_plain(f"... {hidden} more rows; write them all with -o FILE.csv")
