"""Writing predictions: CSV and JSON with the same columns as the terminal table.

Columns, in order: ``id``, ``formula``, then per property ``NAME (UNIT)`` (the ensemble mean
when several models serve it), ``NAME_std (UNIT)`` for ensembles and ``NAME model`` (which
model or group produced it), then ``error`` (empty when the structure was predicted) and
``source`` (the file it came from). Files are written to a temporary name and renamed, so an
interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, TextIO

from recinet_cli.prediction.engine import PredictResult
from recinet_cli.prediction.resolve import Column, PredictError

__all__ = ["FORMATS", "columns", "output_format", "write_csv", "write_json", "write_output"]

FORMATS = {".csv": "csv", ".json": "json"}


def output_format(path: str | os.PathLike[str]) -> str:
    """``csv`` or ``json`` from the file name.

    Raises:
        PredictError: another suffix.
    """
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise PredictError(f"-o {path}: unknown output format; use a .csv or .json file name")
    return fmt


def unit_label(name: str, unit: str) -> str:
    return f"{name} ({unit})" if unit else name


def columns(result: PredictResult) -> list[tuple[str, str]]:
    """``(row key, column header)`` of every output column, in order."""
    out = [("id", "id"), ("formula", "formula")]
    for col in result.columns:
        out.append((col.name, unit_label(col.name, col.unit)))
        if col.ensemble:
            out.append((f"{col.name}_std", unit_label(f"{col.name}_std", col.unit)))
    for col in result.columns:
        out.append((f"{col.name} model", f"{col.name} model"))
    return out + [("error", "error"), ("source", "source")]


def _cell(row: dict[str, Any], key: str, column_models: dict[str, str]) -> str:
    if key in column_models:
        return column_models[key]
    value = row.get(key)
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.8g}"
    return str(value)


def model_label(col: Column) -> str:
    """``NAME`` of a single model, ``GROUP`` / ``a+b`` with the member count for ensembles."""
    return f"{col.label} ({len(col.members)} models)" if col.ensemble else col.label


def write_csv(result: PredictResult, stream: TextIO) -> None:
    """The CSV table (header + one line per row) to an open text stream."""
    cols = columns(result)
    models = {f"{c.name} model": model_label(c) for c in result.columns}
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([header for _, header in cols])
    for row in result.rows:
        writer.writerow([_cell(row, key, models) for key, _ in cols])


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def as_json(result: PredictResult) -> dict[str, Any]:
    """The JSON document: provenance of every column, then the rows (NaN written as null)."""
    from recinet_cli import __version__

    return {
        "recinet_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": result.device,
        "columns": [
            {
                "name": c.name, "unit": c.unit, "model": model_label(c), "ensemble": c.ensemble,
                "members": [
                    {"name": m.name, "path": str(m.path), "output": m.targets[i].name, "val_mae": _json_value(m.targets[i].val_mae)}
                    for m, i in c.members
                ],
            }
            for c in result.columns
        ],
        "structures": len(result.rows),
        "failed": result.failed,
        "rows": [{k: _json_value(v) for k, v in row.items()} for row in result.rows],
    }


def write_json(result: PredictResult, stream: TextIO) -> None:
    json.dump(as_json(result), stream, indent=1, allow_nan=False)
    stream.write("\n")


def write_output(result: PredictResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result`` to ``path`` (format from the suffix) atomically."""
    path = Path(path)
    fmt = output_format(path)
    buf = io.StringIO()
    (write_csv if fmt == "csv" else write_json)(result, buf)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise PredictError(f"-o {path}: cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
