"""Safe output paths: one safe name per folder, inside the output folder, never in an input, written atomically.

* A name derived from a tag (SeriesInstanceUID, SeriesDescription, a study folder name) becomes one
  harmless path component (:func:`safe_component`), and every path is checked on its resolved form
  to lie inside the output folder (:func:`inside`) before anything is written or removed there.
* Outputs never lie in, are, or contain an input folder or file (:func:`check_output_path`).
* Files and folders are written under a temporary sibling name (:data:`TEMPORARY_NAME`, hidden and
  never read by :func:`resample_med.io.discover_series`), then renamed: a reader of the output (a
  PACS import, a viewer, another batch step) sees nothing or the complete result. Leftovers of a
  killed writer are removed by :func:`remove_stale_temporaries` on the next run.
* One run at a time writes into an output folder (:class:`OutputLock`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import socket
import unicodedata
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from resample_med.io.errors import OutputInUseError, OutputPathError, OutputWarning
from resample_med.io.volume import CTVolume

TEMPORARY_NAME = re.compile(r"^\..+\.partial-[0-9a-f]{8}(\..*)?$")
"""Names of temporary siblings (``.<name>.partial-<8 hex>[suffixes]``): never read as input, removed when stale."""

MAX_COMPONENT = 100
"""Longest folder name made from a tag (well under every file system's 255-byte limit)."""

RESERVED_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
)
"""Device names Windows refuses as file names, whatever the extension."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_component(name: str, fallback: str = "series") -> str:
    """``name`` as one harmless path component.

    Letters are reduced to ASCII, every other character but ``. _ -`` (separators of any platform,
    drive colons, control characters, spaces) becomes ``_``; leading and trailing dots, dashes and
    underscores go (so never ``.``, ``..`` or a hidden name); the result is cut to
    :data:`MAX_COMPONENT` characters, ``fallback`` when nothing is left, and prefixed with ``_``
    when it is a Windows device name.
    """
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE.sub("_", text).strip("._-")[:MAX_COMPONENT].strip("._-") or fallback
    if text.split(".")[0].upper() in RESERVED_NAMES:
        text = f"_{text}"
    return text


def unique_components(names: Iterable[str], taken: Iterable[str] = ()) -> list[str]:
    """``names`` made unique (``_2``, ``_3`` ... appended), ignoring case (case-insensitive file systems)."""
    used = {t.lower() for t in taken}
    unique = []
    for name in names:
        candidate, n = name, 1
        while candidate.lower() in used:
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate.lower())
        unique.append(candidate)
    return unique


def inside(root: Path, name: str) -> Path:
    """The resolved path ``root / name`` after checking that it lies in (or is) the resolved ``root``.

    Resolving follows symbolic links, so a link planted inside ``root`` cannot lead a write outside.

    Raises:
        OutputPathError: the path resolves outside ``root``.
    """
    base = Path(root).expanduser().resolve()
    target = (base / name).resolve() if name else base
    if target != base and base not in target.parents:
        raise OutputPathError(
            Path(root) / name,
            f"resolves to {target}, outside the output folder {base}; refusing to write or remove anything there",
        )
    return target


def input_paths(volume: CTVolume) -> list[Path]:
    """What the volume was read from: the folders of DICOM files; a NIfTI file itself."""
    files = [Path(f).resolve() for f in volume.source.get("files", [])]
    if volume.source.get("format") == "nifti":
        return sorted(set(files))
    folders = {f.parent for f in files}
    source_path = volume.source.get("path")
    if source_path:
        p = Path(source_path).resolve()
        folders.add(p if p.is_dir() else p.parent)
    return sorted(folders)


def check_output_path(out: Path, inputs: Iterable[Path], *, overwrite: bool) -> Path:
    """``out`` resolved, after checking it neither is, lies in, nor contains an input (folder or file).

    Raises:
        OutputPathError: unsafe location, or ``out`` exists and ``overwrite`` is False.
    """
    target = Path(out).expanduser().resolve()
    for source in inputs:
        if target == source or source in target.parents or target in source.parents:
            what = "folder" if source.is_dir() else "file"
            raise OutputPathError(
                target, f"refusing to write into or over the input {what} {source}; choose another output path"
            )
    if target.exists() and not overwrite:
        raise OutputPathError(target, "already exists; pass overwrite=True to replace it")
    return target


def check_output_folder(out: Path, inputs: Iterable[Path]) -> Path:
    """``out`` resolved, after checking it is a safe folder path (existing or to be created).

    Raises:
        OutputPathError: ``out`` (or a folder above it) is an existing file, or the location is unsafe.
    """
    target = check_output_path(out, inputs, overwrite=True)
    for folder in (target, *target.parents):
        if folder.exists():
            if not folder.is_dir():
                problem = "is a file, not a folder" if folder == target else f"lies inside {folder}, which is a file"
                raise OutputPathError(out, f"{problem}; give the path of a folder (it is created when missing)")
            break
    return target


def remove_owned(folder: Path, names: Iterable[str]) -> None:
    """Delete ``folder / name`` for each name (a link only unlinked), each checked to lie inside ``folder``."""
    for name in names:
        target = Path(folder) / name
        if target.is_symlink():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(inside(folder, name))
        elif target.exists():
            inside(folder, name).unlink()


def remove_stale_temporaries(folder: Path) -> list[str]:
    """Remove temporary siblings (:data:`TEMPORARY_NAME`) that a killed writer left in ``folder``; their names.

    Call it only while holding the folder's :class:`OutputLock`: then no writer is running there.
    """
    removed = []
    if Path(folder).is_dir():
        for entry in sorted(Path(folder).iterdir()):
            if TEMPORARY_NAME.match(entry.name):
                remove_owned(folder, [entry.name])
                removed.append(entry.name)
    return removed


class OutputLock:
    """Exclusive right of one run to write in an output folder: ``with OutputLock(out): ...``.

    The lock is an ``flock`` on ``out/.resample-med.lock``, a file holding the holder's pid, host and
    start time. The kernel releases the lock when the holder exits in any way (SIGKILL included),
    so a lock file left by a killed run is stale: the next run takes it over with an
    :class:`OutputWarning` naming the dead holder. Creates ``out`` when missing.

    Raises (on entering):
        OutputInUseError: another run holds the lock (the message gives its pid and host).
    """

    FILE = ".resample-med.lock"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / self.FILE
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise self._in_use(holder) from None
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)  # the holder released and removed the file between our open and flock: retry
        previous = _read_holder(fd)
        if previous:
            warnings.warn(
                f"{self.folder}: took over the stale lock of a run that ended without releasing it "
                f"({_describe(previous)})",
                OutputWarning,
                stacklevel=2,
            )
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    @classmethod
    def check_free(cls, folder: Path) -> None:
        """Refuse early, creating nothing, when a live run holds the lock on ``folder``.

        Raises:
            OutputInUseError: naming the holder.
        """
        path = Path(folder) / cls.FILE
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return  # no lock file (or no folder): free
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise cls(folder)._in_use(_read_holder(fd)) from None
        finally:
            os.close(fd)

    def _in_use(self, holder: dict[str, Any]) -> OutputInUseError:
        return OutputInUseError(
            self.folder,
            f"is in use by another resample-med run ({_describe(holder)}); "
            "wait for it to finish, or choose another output folder",
        )

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _read_holder(fd: int) -> dict[str, Any]:
    """The holder record in an open lock file ({} when empty or unreadable)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown"
    since = f", since {holder['since']}" if holder.get("since") else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{since}"


def _temporary_sibling(target: Path) -> Path:
    return target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"


def _replace(temporary: Path, target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    os.replace(temporary, target)


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``target``; on success it replaces ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(target)
    temporary.mkdir()
    try:
        yield temporary
        _replace(temporary, target)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling path of ``target`` (same suffixes); on success it replaces ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(target).with_name(_temporary_sibling(target).name + "".join(target.suffixes))
    try:
        yield temporary
        _replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()
