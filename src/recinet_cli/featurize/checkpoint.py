"""Crash-safe checkpointing for ``recinet featurize``: shards, resume state, final merge.

* every few hundred structures the main process writes a *shard* (a small, uncompressed store
  of the same schema) as ``OUT.h5.partial/shard-NNNNNN.h5.tmp`` and renames it into place;
* when every input is done, the existing ``OUT.h5`` (when appending) and the shards are
  copied into ``OUT.h5.tmp-TOKEN``, which is renamed over ``OUT.h5``; the run token is
  recorded in the file so that shards left by a kill between the rename and the clean-up are
  recognised and never merged twice.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h5py

from recinet_cli.errors import RecinetError, StoreError
from recinet_cli.labels import Labels
from recinet_cli.structures.readers import InputFile, ReadFailure

if TYPE_CHECKING:
    from recinet_cli.featurize import FeaturizeConfig
    from recinet_cli.store.writer import GraphBatch

PARTIAL_SUFFIX = ".partial"


def failures_csv_path(output: str) -> str:
    """``graphs.h5`` -> ``graphs.failed.csv`` (next to the output)."""
    root, ext = os.path.splitext(output)
    return (root if ext in (".h5", ".hdf5") else output) + ".failed.csv"


def abs_source(f: InputFile) -> str:
    return os.path.abspath(f.display)


def check_output_writable(output: str) -> None:
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise RecinetError(f"{output}: cannot write output: directory {parent} does not exist")
    if os.path.isdir(output):
        raise RecinetError(f"{output}: cannot write output: it is a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RecinetError(f"{output}: cannot write output: permission denied in {parent}")


@dataclass
class RunState:
    token: str
    partial_dir: str
    shards: list[str]
    done_inputs: set[str]
    ids: dict[str, str]  # id -> source of everything already stored
    n_shards: int


def _manifest(cfg: FeaturizeConfig, labels: Labels | None, token: str) -> dict[str, object]:
    from recinet_cli.store.schema import featurizer_hash

    return {
        "token": token,
        "featurizer_hash": featurizer_hash(cfg.params.as_dict()),
        "target_names": list(labels.names) if labels else [],
        "disorder": cfg.disorder,
        "id_mode": cfg.id_mode,
        "suffix_duplicates": cfg.suffix_duplicates,
        # only when present, so runs interrupted before split columns existed still resume
        **({"split_column": True} if _has_split(labels) else {}),
    }


def _has_split(labels: Labels | None) -> bool:
    return labels is not None and labels.has_split


def _read_existing(
    output: str, cfg: FeaturizeConfig, labels: Labels | None
) -> tuple[set[str], dict[str, str], list[str]]:
    """Inputs and ids already in the output file; refuses a file built differently."""
    from recinet_cli.store.schema import SCHEMA, SPLIT_DATASET, featurizer_hash

    try:
        h5 = h5py.File(output, "r")
    except OSError:
        raise StoreError(
            f"{output}: exists but is not a readable HDF5 file; use --overwrite to replace it"
        ) from None
    with h5:
        if h5.attrs.get("schema") != SCHEMA:
            raise StoreError(f"{output}: exists and is not a recinet graph store; use --overwrite")
        ours = featurizer_hash(cfg.params.as_dict())
        if h5.attrs["featurizer_hash"] != ours:
            theirs = json.loads(h5.attrs["featurizer"])
            raise StoreError(
                f"{output}: was built with different featurizer parameters ({_diff(theirs, cfg.params.as_dict())}); "
                "appending would mix graphs; use --overwrite or another output file"
            )
        names = json.loads(h5.attrs["target_names"])
        want = list(labels.names) if labels else []
        if names != want:
            raise StoreError(
                f"{output}: has targets {names or 'none'} but this run has {want or 'none'}; "
                "use --overwrite or another output file"
            )
        has = SPLIT_DATASET in h5
        if has != _has_split(labels):
            now = "have none" if has else "have one"
            raise StoreError(
                f"{output}: {'has a' if has else 'has no'} 'split' column but this run's labels {now}; "
                "use --overwrite or another output file"
            )
        inputs, ids = stored_inputs_and_ids(h5)
        merged = json.loads(h5.attrs.get("merged_runs", "[]"))
    return inputs, ids, merged


def _diff(a: dict[str, object], b: dict[str, object]) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: file {a.get(k)!r} vs now {b.get(k)!r}" for k in keys) or "hash differs"


def stored_inputs_and_ids(h5: h5py.File) -> tuple[set[str], dict[str, str]]:
    """Processed input files and the id -> source map of a store or shard."""
    inputs = set(h5["inputs/source"].asstr()[:].tolist())
    ids = dict(zip(h5["structures/id"].asstr()[:].tolist(), h5["structures/source"].asstr()[:].tolist()))
    return inputs, ids


def prepare(cfg: FeaturizeConfig, labels: Labels | None) -> RunState:
    """Open or resume the partial directory; collect what is already done."""
    output = cfg.output
    partial = output + PARTIAL_SUFFIX
    if cfg.overwrite:
        shutil.rmtree(partial, ignore_errors=True)
        if os.path.exists(output):
            os.remove(output)
    for stale in glob.glob(glob.escape(output) + ".tmp-*"):
        os.remove(stale)  # a merge that was killed before its rename
    done: set[str] = set()
    ids: dict[str, str] = {}
    merged: list[str] = []
    if os.path.exists(output):
        done, ids, merged = _read_existing(output, cfg, labels)
    manifest_path = os.path.join(partial, "manifest.json")
    if os.path.isdir(partial):
        try:
            with open(manifest_path) as fh:
                old = json.load(fh)
        except (OSError, json.JSONDecodeError):
            old = None
        if old is None or old.get("token") in merged:
            shutil.rmtree(partial)  # already merged, or never got a manifest: nothing to keep
        else:
            want = _manifest(cfg, labels, old["token"])
            if old != want:
                raise StoreError(
                    f"{partial}: an interrupted run with different settings ({_diff(old, want)}) is "
                    "pending; rerun it with its settings, or use --overwrite"
                )
    if not os.path.isdir(partial):
        token = uuid.uuid4().hex
        os.makedirs(partial)
        _atomic_write_text(manifest_path, json.dumps(_manifest(cfg, labels, token), indent=1))
    with open(manifest_path) as fh:
        token = json.load(fh)["token"]
    shards = sorted(p for p in os.listdir(partial) if p.startswith("shard-") and p.endswith(".h5"))
    for name in os.listdir(partial):
        if name.endswith(".tmp"):
            os.remove(os.path.join(partial, name))  # a shard that was being written when killed
    for name in shards:
        with h5py.File(os.path.join(partial, name), "r") as h5:
            shard_inputs, shard_ids = stored_inputs_and_ids(h5)
            done.update(shard_inputs)
            ids.update(shard_ids)
    n_next = 1 + max((int(s[6:12]) for s in shards), default=-1)
    return RunState(token, partial, [os.path.join(partial, s) for s in shards], done, ids, n_next)


def _atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(
    state: RunState, batch: GraphBatch, params: dict[str, object], labels: Labels | None
) -> None:
    from recinet_cli.store.writer import append_batch, create_store

    final = os.path.join(state.partial_dir, f"shard-{state.n_shards:06d}.h5")
    tmp = final + ".tmp"
    names = list(labels.names) if labels else []
    units = list(labels.units) if labels else []
    with create_store(tmp, params, names, units, compress=False, with_split=_has_split(labels)) as h5:
        append_batch(h5, batch)
    _fsync_path(tmp)
    os.replace(tmp, final)
    state.shards.append(final)
    state.n_shards += 1


def merge(
    cfg: FeaturizeConfig, state: RunState, labels: Labels | None, extra_failures: list[ReadFailure]
) -> None:
    """Existing output + shards -> OUT.h5.tmp-TOKEN -> atomic rename over OUT.h5."""
    from recinet_cli.store.writer import GraphBatch, append_batch, create_store, iter_batches

    params = cfg.params.as_dict()
    names = list(labels.names) if labels else []
    units = list(labels.units) if labels else []
    tmp = f"{cfg.output}.tmp-{state.token}"
    merged_runs: list[str] = []
    seen_failures: set[tuple[str, str]] = set()
    with create_store(tmp, params, names, units, with_split=_has_split(labels)) as out:
        sources = ([cfg.output] if os.path.exists(cfg.output) else []) + state.shards
        for src in sources:
            with h5py.File(src, "r") as h5:
                if src == cfg.output:
                    merged_runs = json.loads(h5.attrs.get("merged_runs", "[]"))
                for batch in iter_batches(h5):
                    seen_failures.update(zip(batch.failed_source, batch.failed_reason))
                    append_batch(out, batch)
        tail = GraphBatch(n_targets=len(names), has_split=_has_split(labels))
        for f in extra_failures:
            if (f.source, f.reason) not in seen_failures:
                tail.add_failure(f.source, f.id, f.reason)
        append_batch(out, tail)
        out.attrs["merged_runs"] = json.dumps([*merged_runs, state.token])
    _fsync_path(tmp)
    os.replace(tmp, cfg.output)
    shutil.rmtree(state.partial_dir, ignore_errors=True)


def new_failures(output: str, failures: list[ReadFailure]) -> bool:
    """Whether some of ``failures`` are not recorded in ``output`` yet."""
    from recinet_cli.store.reader import GraphStore

    with GraphStore(output) as store:
        known = {(source, reason) for source, _id, reason in store.failures()}
    return any((f.source, f.reason) not in known for f in failures)


def write_failures_csv(output: str, path: str) -> int:
    from recinet_cli.store.reader import GraphStore

    rows = GraphStore(output).failures() if os.path.exists(output) else []
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "id", "reason"])
        w.writerows(rows)
    os.replace(tmp, path)
    return len(rows)


def finish(
    cfg: FeaturizeConfig, state: RunState, labels: Labels | None, extra_failures: list[ReadFailure]
) -> None:
    """Merge the shards into the output, or only clean up when the run added nothing."""
    if state.shards or not os.path.exists(cfg.output) or new_failures(cfg.output, extra_failures):
        merge(cfg, state, labels, extra_failures)
    else:
        shutil.rmtree(state.partial_dir, ignore_errors=True)
