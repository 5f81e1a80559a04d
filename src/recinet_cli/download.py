"""Checksummed, cached, atomic downloads of dataset files.

A dataset plugin describes each remote file with a :class:`RemoteFile` (URL, SHA-256, file
name) and calls :func:`fetch`. The file lands in ``cache_dir()/downloads/NAME``:

1. a local copy wins: ``local=`` (the CLI's ``--data FILE``) or the file named by the
   plugin's environment variable (e.g. ``RECINET_JARVIS_DFT_3D=/data/jdft_3d.json.zip``)
   is used as is, nothing is downloaded or copied;
2. a cached file is used when its SHA-256 matches (verified once, then remembered in a
   ``NAME.sha256`` side file next to it, keyed by size and mtime);
3. otherwise the URL is streamed into ``NAME.part-XXXX`` in the same directory while hashing,
   with a progress bar; a short transfer (fewer bytes than ``Content-Length``) or a checksum
   mismatch deletes the partial file and raises :class:`DownloadError`; success is an atomic
   ``os.replace`` onto ``NAME``. A crash can leave a ``.part-*`` file, never a wrong ``NAME``.

Files whose checksum could not be pinned when the plugin was written (``sha256=None``) are
verified against the checksum recorded at their first download (trust on first use), also
when a corrupted cache entry is downloaded again; the recorded value is shown so it can be
pinned.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from recinet_cli.errors import RecinetError
from recinet_cli.paths import cache_dir

__all__ = ["DownloadError", "RemoteFile", "fetch", "sha256_file"]

_CHUNK = 1 << 20


class DownloadError(RecinetError):
    """A download failed (network, truncated transfer, checksum mismatch)."""


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file.

    Attributes:
        name: File name in the cache (unique across plugins, e.g. ``jdft_3d-8-18-2021.json.zip``).
        url: Source URL.
        sha256: Expected hex SHA-256 of the file; ``None`` when it could not be pinned.
        env_var: Environment variable that may name a local copy instead.
        description: Shown in messages, e.g. ``"JARVIS dft_3d (2021-08-18)"``.
    """

    name: str
    url: str
    sha256: str | None = None
    env_var: str | None = None
    description: str = ""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _hint(remote: RemoteFile) -> str:
    env = f" or set {remote.env_var}=FILE" if remote.env_var else ""
    return f"download it yourself from {remote.url} and pass --data FILE{env}"


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded(path: Path) -> dict[str, object] | None:
    try:
        return json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return None


def _record(path: Path, digest: str) -> None:
    side = _sidecar(path)
    tmp = side.with_name(side.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"sha256": digest, **_stamp(path)}))
    os.replace(tmp, side)


def _cached_ok(path: Path, remote: RemoteFile) -> bool:
    """Whether the cached ``path`` is the right file (hashing it at most once)."""
    rec = _recorded(path)
    if rec is not None and {k: rec.get(k) for k in ("size", "mtime_ns")} == _stamp(path):
        return remote.sha256 is None or rec.get("sha256") == remote.sha256
    digest = sha256_file(path)
    if remote.sha256 is not None and digest != remote.sha256:
        return False
    if remote.sha256 is None and rec is not None and rec.get("sha256") != digest:
        return False
    _record(path, digest)
    return True


def fetch(
    remote: RemoteFile,
    *,
    local: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    timeout: float = 60.0,
) -> Path:
    """Path of a usable copy of ``remote``: the local copy, the cached file, or a download.

    Args:
        remote: What to fetch.
        local: A local copy to use instead (``--data FILE``); must exist.
        progress: Show a progress bar (default: when stderr is a terminal).
        timeout: Socket timeout in seconds.

    Raises:
        DownloadError: missing local copy, network error, short transfer, checksum mismatch.
    """
    if local is None and remote.env_var and os.environ.get(remote.env_var):
        local = os.environ[remote.env_var]
        origin = f"{remote.env_var}={local}"
    else:
        origin = str(local)
    if local is not None:
        path = Path(local).expanduser()
        if not path.is_file():
            raise DownloadError(f"{origin}: no such file (a local copy of {remote.name})")
        return path

    target = cache_dir() / "downloads" / remote.name
    if target.is_file():
        if _cached_ok(target, remote):
            return target
        target.unlink()  # a stale or corrupted cache entry: fetch it again
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = _download(remote, target, _expected(target, remote), progress, timeout)
    _record(target, digest)
    if remote.sha256 is None:
        print(f"recinet: {remote.name}: sha256 {digest} (recorded; not pinned by the plugin)", file=sys.stderr)
    return target


def _expected(target: Path, remote: RemoteFile) -> tuple[str, str] | None:
    """``(sha256, where it comes from)`` a download of ``remote`` must match, or ``None``.

    The plugin's pinned checksum wins; an unpinned file must match the checksum recorded at
    its first download (trust on first use), which survives a corrupted cache entry.
    """
    if remote.sha256 is not None:
        return remote.sha256, "pinned by the plugin"
    rec = _recorded(target)
    digest = rec.get("sha256") if rec is not None else None
    if isinstance(digest, str):
        side = _sidecar(target)
        return digest, f"recorded at the first download; delete {side} to accept a new file"
    return None


def _open(remote: RemoteFile, what: str, timeout: float) -> http.client.HTTPResponse:
    """Open ``remote.url`` (any error becomes a one-line :class:`DownloadError`)."""
    request = urllib.request.Request(remote.url, headers={"User-Agent": "recinet"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()  # the error response holds the connection open
        raise DownloadError(
            f"cannot download {what} from {remote.url}: HTTP {exc.code} {_one_line(exc.reason)}; "
            f"{_hint(remote)}"
        ) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(
            f"cannot download {what} from {remote.url}: {_one_line(reason)}; {_hint(remote)}"
        ) from exc


def _one_line(reason: object) -> str:
    """``str(reason)`` squeezed onto one line (or the type name when it is empty)."""
    text = " ".join(str(reason).split())
    return text or type(reason).__name__


def _stream(response: http.client.HTTPResponse, out: BinaryIO, remote: RemoteFile, what: str, progress: bool | None) -> str:
    """Copy the response body into ``out`` while hashing; returns the hex SHA-256.

    Raises:
        DownloadError: the connection broke, or fewer bytes came than ``Content-Length``.
    """
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    h = hashlib.sha256()
    received = 0
    with _progress_bar(what, total, progress) as advance:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, ValueError, http.client.HTTPException) as exc:  # incl. IncompleteRead
                raise DownloadError(
                    f"download of {what} from {remote.url} broke off after {received} bytes: "
                    f"{_one_line(exc)}"
                ) from exc
            if not chunk:
                break
            out.write(chunk)
            h.update(chunk)
            received += len(chunk)
            advance(len(chunk))
    if total is not None and received != total:
        raise DownloadError(
            f"download of {what} from {remote.url} is truncated: {received} of {total} bytes"
        )
    return h.hexdigest()


def _download(
    remote: RemoteFile,
    target: Path,
    expected: tuple[str, str] | None,
    progress: bool | None,
    timeout: float,
) -> str:
    """Stream ``remote.url`` to a temporary file beside ``target``, verify, rename.

    Args:
        expected: ``(sha256, origin)`` the file must match (see :func:`_expected`), or ``None``.

    Returns:
        The hex SHA-256 of the file now at ``target``.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".part-", dir=target.parent)
    tmp = Path(tmp_name)
    what = remote.description or remote.name
    try:
        with os.fdopen(fd, "wb") as out:
            with _open(remote, what, timeout) as response:
                digest = _stream(response, out, remote, what, progress)
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and digest != expected[0]:
            raise DownloadError(
                f"checksum mismatch for {what} from {remote.url}: sha256 {digest}, "
                f"expected {expected[0]} ({expected[1]})"
            )
        os.replace(tmp, target)
        return digest
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _progress_bar:
    """Context manager yielding ``advance(n_bytes)``; a rich bar on a terminal, else silent."""

    def __init__(self, what: str, total: int | None, show: bool | None) -> None:
        self.show = sys.stderr.isatty() if show is None else show
        self.what, self.total = what, total
        self._progress = None

    def __enter__(self):  # noqa: ANN204
        if not self.show:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True,
        )
        self._progress.start()
        task = self._progress.add_task(f"downloading {self.what}", total=self.total)
        return lambda n: self._progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
