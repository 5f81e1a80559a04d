"""Exported model artifacts: what ``recinet export`` writes, checks and reads back.

An artifact is the network *core* of a trained bundle, graph tensors in and properties in
physical units out, in one of three formats:

===================  ========  ==============================================================
``torchscript``      ``.pt``   ``torch.jit.save`` of :func:`~recinet_cli.model.export.script_model`
``torch-export``     ``.pt2``  ``torch.export.save`` of :func:`~recinet_cli.model.export.export_model`
``onnx``             ``.onnx`` ``torch.onnx.export`` (dynamo exporter, dynamic N, E, B, K, P)
===================  ========  ==============================================================

Inputs (positional, in :data:`~recinet_cli.model.recinet.INPUT_NAMES` order; N atoms, E edges,
B crystals, K k-vectors, P (atom, k) pairs): see :data:`INPUT_SPECS`. Output ``[B, T]``.

Every export is checked against eager PyTorch on real structures (the sample POSCARs shipped
with recinet, or the caller's): the artifact is written under a temporary name, loaded back
from disk as a user would load it, and only renamed to its final name when every property
agrees within ``tolerance x`` that property's training standard deviation.

The artifact carries a JSON description (:func:`read_artifact_metadata`): in the zip archive
as the extra file ``recinet.json`` (TorchScript, ``.pt2``) or in the ONNX ``metadata_props``
under the key ``recinet``. Reading it never runs or unpickles the model.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recinet_cli.errors import RecinetError

if TYPE_CHECKING:
    import torch

    from recinet_cli.featurize.worker import GraphRecord

__all__ = [
    "DEFAULT_TOLERANCE",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "FORMATS",
    "INPUT_SPECS",
    "ExportError",
    "ExportReport",
    "ParityError",
    "ParityRow",
    "default_output",
    "export_artifact",
    "load_artifact",
    "read_artifact_metadata",
]

EXPORT_FORMAT = "recinet-export"
EXPORT_VERSION = 1
#: Export formats and their default file suffixes.
FORMATS: dict[str, str] = {"torchscript": ".pt", "torch-export": ".pt2", "onnx": ".onnx"}
DEFAULT_TOLERANCE = 1e-4
#: Name of the metadata file inside TorchScript / ``.pt2`` archives (``<archive>/extra/``).
METADATA_FILE = "recinet.json"
#: Key of the metadata in an ONNX model's ``metadata_props``.
ONNX_METADATA_KEY = "recinet"
ONNX_INSTALL = 'pip install "recinet[onnx]"'
#: The packages ``--format onnx`` needs (the ``onnx`` extra).
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
#: Crystals per parity batch (a long ``--structures`` list is checked in chunks).
MAX_BATCH = 64
_MAX_METADATA_BYTES = 16 * 2**20

#: (dtype, shape) of each input of an exported model, in ``INPUT_NAMES`` order.
INPUT_SPECS: dict[str, tuple[str, str]] = {
    "atomic_numbers": ("int64", "[N]"),
    "edge_index": ("int64", "[2, E]"),
    "edge_len": ("float32", "[E]"),
    "node_graph": ("int64", "[N]"),
    "inv_natoms": ("float32", "[B]"),
    "frac": ("float32", "[N, 3]"),
    "k_int": ("float32", "[K, 3]"),
    "k_norm": ("float32", "[K]"),
    "k_slot": ("int64", "[K]"),
    "pair_atom": ("int64", "[P]"),
    "pair_k": ("int64", "[P]"),
}


class ExportError(RecinetError):
    """An export that cannot be made, or a file that is not a recinet export artifact."""


@dataclass(frozen=True)
class ParityRow:
    """Parity of one property: max |artifact - eager| over every checked crystal, in the
    property's unit, and the allowed difference (``tolerance x`` its training std)."""

    property: str
    unit: str
    max_diff: float
    tol: float

    @property
    def ok(self) -> bool:
        """Within tolerance (a NaN difference never is)."""
        return self.max_diff <= self.tol


class ParityError(ExportError):
    """The exported model disagrees with eager PyTorch (``rows``: the whole comparison)."""

    def __init__(self, message: str, rows: Sequence[ParityRow], n_structures: int = 0) -> None:
        super().__init__(message)
        self.rows = list(rows)
        self.n_structures = n_structures


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_artifact` wrote.

    Attributes:
        path: the artifact file.
        format: ``torchscript``, ``torch-export`` or ``onnx``.
        metadata: the description embedded in the artifact (see :func:`read_artifact_metadata`).
        parity: one row per property, in output order.
        seconds: wall time of the whole export (loading, exporting, checking).
        structures: ids of the structures the parity check used.
    """

    path: Path
    format: str
    metadata: dict[str, Any]
    parity: list[ParityRow]
    seconds: float
    structures: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# names and options


def check_format(fmt: str) -> str:
    """``fmt`` if it is a known export format, else an :class:`ExportError`."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def model_name(model: str | os.PathLike[str]) -> str:
    """The name an artifact is given: the store name, a bundle file's stem (its directory's
    name for ``.../NAME/model.safetensors``) or a bundle directory's name."""
    from recinet_cli.modelstore import BUNDLE_NAME

    p = Path(model).expanduser()
    if p.is_file():
        return p.resolve().parent.name if p.name == BUNDLE_NAME else p.stem
    if p.is_dir():
        return p.resolve().name
    return str(model)


def default_output(model: str | os.PathLike[str], fmt: str) -> Path:
    """``MODEL_NAME.pt`` / ``.pt2`` / ``.onnx`` in the current directory."""
    return Path(model_name(model) + FORMATS[check_format(fmt)])


def require_onnx() -> None:
    """Raise a one-line :class:`ExportError` unless the ONNX extra is installed."""
    missing = []
    for name in ONNX_PACKAGES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(
            f"ONNX export needs the optional packages {', '.join(ONNX_PACKAGES)} "
            f"(missing: {', '.join(missing)}); install them with: {ONNX_INSTALL}"
        )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


# ---------------------------------------------------------------------------------------------
# structures -> batches


def _read_crystals(structures: Sequence[str | os.PathLike[str]] | None) -> list[Any]:
    from recinet_cli.paths import sample_structures
    from recinet_cli.structures.readers import read_structures

    where = "--structures"
    if structures is None:
        structures, where = sample_structures(), "sample structures"
        if not structures:  # pragma: no cover - a broken installation
            raise ExportError("the sample structures shipped with recinet are missing; pass --structures")
    crystals, failures = read_structures([os.fspath(s) for s in structures])
    if failures:
        f = failures[0]
        src = f.source + (f" [{f.id}]" if f.id and f.id not in f.source else "")
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise ExportError(f"{where}: cannot read {src}: {f.reason}{more}")
    if not crystals:
        raise ExportError(f"{where}: no structure files found in {', '.join(map(os.fspath, structures))}")
    return crystals


def _featurize(crystals: Sequence[Any], info: Mapping[str, Any], where: str) -> list[GraphRecord]:
    from recinet_cli.inference import bundle_params, featurize_crystals

    params = bundle_params(info, where)
    records = []
    for c in crystals:
        try:
            records.extend(featurize_crystals([c], params))
        except RecinetError as exc:
            raise ExportError(f"{c.source} [{c.id}]: {exc}") from None
    return records


def _contract_inputs(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of ``INPUT_NAMES`` with exactly the dtypes of :data:`INPUT_SPECS`."""
    import torch

    from recinet_cli.model.recinet import INPUT_NAMES

    dtypes = {"int64": torch.int64, "float32": torch.float32}
    return {n: inputs[n].to(dtypes[INPUT_SPECS[n][0]]).contiguous() for n in INPUT_NAMES}


def _batches(model: Any, records: Sequence[GraphRecord]) -> list[dict[str, torch.Tensor]]:
    """Parity batches: all records (in chunks of :data:`MAX_BATCH`), then the smallest crystal
    alone (one crystal: B = 1 and the smallest N, E, K, P)."""
    from recinet_cli.inference import collate, model_inputs

    groups = [list(records[i : i + MAX_BATCH]) for i in range(0, len(records), MAX_BATCH)]
    groups.append([min(records, key=lambda r: len(r.numbers))])
    return [_contract_inputs(model_inputs(model, collate(g))) for g in groups]


def _args(inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    from recinet_cli.model.recinet import INPUT_NAMES

    return tuple(inputs[n] for n in INPUT_NAMES)


# ---------------------------------------------------------------------------------------------
# export, save, load


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints, warnings and log chatter."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export(model: Any, fmt: str, example: Mapping[str, torch.Tensor]) -> Any:
    """The in-memory export: a ScriptModule, an ExportedProgram or an ONNX ModelProto."""
    import torch

    from recinet_cli.model.export import _size_oblivious, dynamic_shapes, export_model, script_model
    from recinet_cli.model.recinet import INPUT_NAMES

    try:
        with _quiet():
            if fmt == "torchscript":
                return script_model(model)
            if fmt == "torch-export":
                return export_model(model, example)
            context, oblivious = _size_oblivious()
            with context:
                program = torch.onnx.export(
                    model,
                    _args(example),
                    dynamo=True,
                    input_names=list(INPUT_NAMES),
                    output_names=["properties"],
                    dynamic_shapes=tuple(dynamic_shapes(example, oblivious).values()),
                    external_data=False,
                    verbose=False,
                )
            return program.model_proto
    except RecinetError:
        raise
    except Exception as exc:
        raise ExportError(f"{fmt} export failed: {type(exc).__name__}: {_one_line(exc)}") from exc


def _save(artifact: Any, fmt: str, path: Path, metadata: Mapping[str, Any]) -> None:
    """Write ``artifact`` with ``metadata`` embedded to ``path``."""
    import torch

    text = json.dumps(metadata, sort_keys=True)
    if fmt == "onnx":
        import onnx

        del artifact.metadata_props[:]
        entry = artifact.metadata_props.add()
        entry.key, entry.value = ONNX_METADATA_KEY, text
        onnx.save_model(artifact, str(path))
        return
    # a file object, not a name: the archive's top folder is then "archive", not the temp name
    with open(path, "wb") as f:
        if fmt == "torchscript":
            torch.jit.save(artifact, f, _extra_files={METADATA_FILE: text})
        else:
            torch.export.save(artifact, f, extra_files={METADATA_FILE: text})


def load_artifact(path: str | os.PathLike[str], fmt: str | None = None) -> Callable[..., torch.Tensor]:
    """Load an artifact the way a user would (``torch.jit.load``, ``torch.export.load(...)
    .module()``, or an onnxruntime ``InferenceSession`` on the CPU with one intra-op thread,
    see ``docs/deploy.md``, "Limits").

    Args:
        path: the artifact file.
        fmt: its format (default: read from its metadata).

    Returns:
        A callable taking the :data:`INPUT_SPECS` tensors positionally and returning the
        ``[B, T]`` predictions as a torch tensor. Note: loading a TorchScript or ``.pt2`` file
        unpickles it; load only files you trust.
    """
    import torch

    path = Path(path)
    fmt = check_format(fmt or read_artifact_metadata(path)["export_format"])
    if fmt == "torchscript":
        return torch.jit.load(str(path), map_location="cpu")
    if fmt == "torch-export":
        with _quiet():
            return torch.export.load(str(path)).module()
    require_onnx()
    import onnxruntime as ort

    from recinet_cli.model.recinet import INPUT_NAMES

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # one intra-op thread: the CPU ScatterND kernel with reduction="add" (the per-atom and
    # per-crystal sums) races with several threads and now and then drops updates
    # (onnxruntime 1.32, microsoft/onnxruntime#18048), giving wrong values at random
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]

    def run(*args: torch.Tensor) -> torch.Tensor:
        feed = dict(zip(INPUT_NAMES, args))
        out = session.run(None, {n: feed[n].detach().cpu().numpy() for n in wanted})[0]
        return torch.from_numpy(out)

    return run


# ---------------------------------------------------------------------------------------------
# parity


def _eager(model: Any, batches: Sequence[Mapping[str, torch.Tensor]]) -> list[torch.Tensor]:
    from recinet_cli.model.export import _eval_no_grad

    with _eval_no_grad(model):  # restores buffers (e.g. MoE expert counts) afterwards
        return [model(*_args(b)).detach().clone() for b in batches]


def _max_diffs(
    exported: Callable[..., torch.Tensor],
    batches: Sequence[Mapping[str, torch.Tensor]],
    expected: Sequence[torch.Tensor],
) -> list[float]:
    """Per property (column): max |exported - eager| over all batches; NaN if either is NaN."""
    import torch

    n_t = expected[0].shape[1]
    worst = [0.0] * n_t
    for inputs, want in zip(batches, expected):
        with torch.no_grad():
            got = exported(*_args(inputs))
        if tuple(got.shape) != tuple(want.shape):
            raise ExportError(
                f"the exported model returns shape {list(got.shape)}, eager PyTorch {list(want.shape)}"
            )
        diff = (got.to(want.dtype) - want).abs()  # NaN stays NaN
        for t in range(n_t):
            col = diff[:, t]
            d = math.nan if bool(torch.isnan(col).any()) else (float(col.max()) if col.numel() else 0.0)
            if math.isnan(d) or math.isnan(worst[t]):
                worst[t] = math.nan
            else:
                worst[t] = max(worst[t], d)
    return worst


def _parity_rows(
    path: Path, fmt: str, batches: Sequence[Mapping[str, torch.Tensor]], expected: Sequence[torch.Tensor],
    names: Sequence[str], units: Sequence[str], tols: Sequence[float],
) -> list[ParityRow]:
    """Load the artifact at ``path`` (as a user would) and compare it with ``expected``."""
    measured = _max_diffs(load_artifact(path, fmt), batches, expected)
    return [ParityRow(*row) for row in zip(names, units, measured, tols)]


def _zip_members(path: Path) -> dict[str, tuple[int, int]] | None:
    """``{member: (CRC, size)}`` of a zip archive, without the recinet metadata and the
    per-save serialization id; ``None`` for a file that is not a zip (ONNX)."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        return {
            m.filename: (m.CRC, m.file_size) for m in archive.infolist()
            if not m.filename.endswith((f"/extra/{METADATA_FILE}", "/.data/serialization_id"))
        }


def _tolerances(info: Mapping[str, Any], model: Any, tolerance: float) -> list[float]:
    """``tolerance x`` each property's training std (the bundle's scaler; the model's
    ``target_std`` buffer where the description has none or an unusable value)."""
    buffer = [float(s) for s in model.target_std]
    stored = (info.get("scaler") or {}).get("std") or []
    stds = []
    for t, fallback in enumerate(buffer):
        s = stored[t] if t < len(stored) else None
        ok = isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
        stds.append(float(s) if ok else fallback)
    return [tolerance * s for s in stds]


def _check(rows: Sequence[ParityRow], fmt: str, n_structures: int, out: Path) -> None:
    for r in rows:
        if not r.ok:
            unit = f" {r.unit}" if r.unit else ""
            what = "NaN" if math.isnan(r.max_diff) else f"max |diff| {r.max_diff:.3g}{unit}"
            raise ParityError(
                f"parity check failed for {r.property}: {fmt} vs eager PyTorch on {n_structures} "
                f"structure{'' if n_structures == 1 else 's'}: {what} > tolerance {r.tol:.3g}{unit}; "
                f"{out} was not written",
                rows,
                n_structures,
            )


# ---------------------------------------------------------------------------------------------
# metadata


def _targets(info: Mapping[str, Any], names: Sequence[str]) -> list[dict[str, str]]:
    units = {t.get("name"): t.get("unit") or "" for t in info.get("targets") or [] if isinstance(t, Mapping)}
    return [{"name": n, "unit": str(units.get(n, ""))} for n in names]


def _build_metadata(
    fmt: str, name: str, weights_sha256: str | None, info: Mapping[str, Any], config: Any,
    structure_ids: Sequence[str],
) -> dict[str, Any]:
    from recinet_cli import __version__
    from recinet_cli.model.recinet import INPUT_NAMES
    from recinet_cli.store.schema import featurizer_hash

    featurizer = dict(info.get("featurizer") or {})
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "export_format": fmt,
        "recinet_version": __version__,
        "model_name": name,
        "bundle_weights_sha256": weights_sha256,
        "inputs": [{"name": n, "dtype": INPUT_SPECS[n][0], "shape": INPUT_SPECS[n][1]} for n in INPUT_NAMES],
        "output": {"shape": "[B, T]", "units": "physical"},
        "targets": _targets(info, config.targets),
        "featurizer": featurizer,
        "featurizer_hash": info.get("featurizer_hash") or featurizer_hash(featurizer),
        "reciprocal": {
            "enabled": bool(config.reciprocal),
            "kset": config.kset,
            "gmax": float(config.gmax),
            "box": list(config.box),
        },
        "parity": {},
        "parity_structures": list(structure_ids),
    }


def read_artifact_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON description embedded in an artifact, read without running or unpickling it.

    TorchScript and ``.pt2`` files are zip archives: the description is the member
    ``<archive>/extra/recinet.json``. ONNX files keep it in ``metadata_props["recinet"]``
    (parsed with ``onnx.load(..., load_external_data=False)``, which needs the ``onnx``
    package).

    Keys: ``format`` (``"recinet-export"``), ``format_version`` (1), ``export_format``,
    ``recinet_version``, ``model_name``, ``bundle_weights_sha256``, ``inputs`` (name, dtype,
    shape of each input, in call order), ``output`` (``{"shape": "[B, T]", "units":
    "physical"}``), ``targets`` (name, unit; the T output columns), ``featurizer``,
    ``featurizer_hash``, ``reciprocal`` (enabled, kset, gmax, box), ``parity`` (property ->
    max |artifact - eager| at export time) and ``parity_structures`` (ids).

    Raises:
        ExportError: no such file, or not a recinet export artifact.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                members = [
                    m for m in archive.infolist()
                    if m.filename.count("/") == 2 and m.filename.endswith(f"/extra/{METADATA_FILE}")
                ]
                if not members:
                    raise ExportError(f"{path}: a zip archive without recinet export metadata")
                if members[0].file_size > _MAX_METADATA_BYTES:
                    raise ExportError(f"{path}: recinet export metadata too large")
                text = archive.read(members[0]).decode("utf-8")
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
            raise ExportError(f"{path}: unreadable archive ({_one_line(exc)})") from None
    else:
        try:
            import onnx
        except ImportError:
            raise ExportError(
                f"{path}: not a zip archive; reading ONNX files needs the onnx package: {ONNX_INSTALL}"
            ) from None
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise ExportError(f"{path}: neither a PyTorch archive nor an ONNX model ({_one_line(exc)})") from None
        props = {p.key: p.value for p in proto.metadata_props}
        if ONNX_METADATA_KEY not in props:
            raise ExportError(f"{path}: no recinet export metadata (not written by recinet export)")
        text = props[ONNX_METADATA_KEY]
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise ExportError(f"{path}: corrupted recinet export metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path}: not a recinet export artifact")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ExportError(f"{path}: corrupted recinet export metadata (format_version {version!r})")
    if version > EXPORT_VERSION:
        raise ExportError(
            f"{path}: export format {version} is newer than this recinet reads ({EXPORT_VERSION}); upgrade recinet"
        )
    return meta


# ---------------------------------------------------------------------------------------------
# the export


def export_artifact(
    model: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str] | None = None,
    structures: Sequence[str | os.PathLike[str]] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportReport:
    """Export a trained model bundle and check it against eager PyTorch.

    Args:
        model: a model-store name, a bundle file, or a directory holding ``model.safetensors``.
        fmt: ``torchscript``, ``torch-export`` or ``onnx``.
        out: the file to write (default: :func:`default_output`). Replaced if it exists.
        structures: structure files or directories for the parity check (default: the sample
            POSCARs shipped with recinet, :func:`recinet_cli.paths.sample_structures`).
        tolerance: allowed max |artifact - eager| per property, as a fraction of that
            property's training std.

    The artifact is saved under a temporary name next to ``out``, loaded back from disk with
    :func:`load_artifact` and compared with the eager model on all the structures together
    (chunks of :data:`MAX_BATCH` crystals) and on the smallest one alone; it is renamed to
    ``out`` only if every property is within tolerance. The measured differences are then
    embedded and the file saved again; a TorchScript or ``.pt2`` archive is compared member
    by member with the checked one (only the metadata may differ), an ONNX file is checked
    again from disk.

    Raises:
        ExportError: unknown format, ONNX extra missing, unreadable structures, export failure.
        ParityError: the artifact disagrees with eager PyTorch (or gives NaN); ``out`` is left
            untouched.
        BundleError: the bundle is missing, damaged or tampered with (nothing is unpickled).
    """
    start = time.perf_counter()
    fmt = check_format(fmt)
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ExportError(f"--tolerance must be a finite number >= 0, got {tolerance!r}")
    if fmt == "onnx":
        require_onnx()

    from recinet_cli.bundle import _metadata, load_bundle
    from recinet_cli.modelstore import resolve

    bundle = resolve(os.fspath(model))
    net, info = load_bundle(bundle)
    weights_sha256 = _metadata(bundle).get("weights_sha256")
    records = _featurize(_read_crystals(structures), info, str(bundle))
    batches = _batches(net, records)
    expected = _eager(net, batches)
    ids = [r.id for r in records]
    config = net.config
    metadata = _build_metadata(fmt, model_name(model), weights_sha256, info, config, ids)
    units = [t["unit"] for t in metadata["targets"]]
    tols = _tolerances(info, net, float(tolerance))

    out_path = Path(out) if out is not None else default_output(model, fmt)
    if out_path.is_dir():
        raise ExportError(f"{out_path} is a directory; give a file name with -o")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        artifact = _export(net, fmt, batches[0])
        _save(artifact, fmt, tmp, metadata)
        rows = _parity_rows(tmp, fmt, batches, expected, config.targets, units, tols)
        _check(rows, fmt, len(ids), out_path)
        # embed the measured differences; the file then differs from the checked one only in
        # the metadata (verified member by member; checked again from disk if it does not)
        checked = _zip_members(tmp)
        metadata["parity"] = {r.property: r.max_diff for r in rows}
        _save(artifact, fmt, tmp, metadata)
        if checked is None or _zip_members(tmp) != checked:
            rows = _parity_rows(tmp, fmt, batches, expected, config.targets, units, tols)
            _check(rows, fmt, len(ids), out_path)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(
        path=out_path, format=fmt, metadata=metadata, parity=rows,
        seconds=time.perf_counter() - start, structures=ids,
    )
