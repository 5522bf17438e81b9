"""Safe output paths: never inside an input folder, written under a temporary name, then renamed.

A reader of the output folder or file (a PACS import, a viewer, another batch step) therefore
sees either nothing or the complete result, and an input series can never be overwritten.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from resample_med.io.errors import OutputPathError
from resample_med.io.volume import CTVolume


def input_folders(volume: CTVolume) -> list[Path]:
    """The folders the volume was read from (its ``source`` path and the folders of its files)."""
    folders = {Path(f).resolve().parent for f in volume.source.get("files", [])}
    source_path = volume.source.get("path")
    if source_path:
        p = Path(source_path).resolve()
        folders.add(p if p.is_dir() else p.parent)
    return sorted(folders)


def check_output_path(out: Path, inputs: Iterable[Path], *, overwrite: bool) -> Path:
    """``out`` resolved, after checking it neither is, lies in, nor contains an input folder.

    Raises:
        OutputPathError: unsafe location, or ``out`` exists and ``overwrite`` is False.
    """
    target = Path(out).expanduser().resolve()
    for folder in inputs:
        if target == folder or folder in target.parents or target in folder.parents:
            raise OutputPathError(
                target, f"refusing to write into or over the input folder {folder}; choose another output path"
            )
    if target.exists() and not overwrite:
        raise OutputPathError(target, "already exists; pass overwrite=True to replace it")
    return target


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
