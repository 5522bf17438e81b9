"""Resumable state of a volume reconstruction: finished slices kept on disk.

A :class:`SliceCheckpoint` is a folder (the CLI uses ``OUTPUT/<series>/.partial/``) holding
``state.json`` (a fingerprint of the input and the resolved configuration) and one
``slice_<index>.npz`` per finished slice (model-grid HU, optional std, its report row). Each slice
file is written atomically, so an interruption (Ctrl-C) at any moment leaves only complete slices;
a later run with the same fingerprint skips them. A different fingerprint is refused unless the
caller asks to start over.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

STATE_FILE = "state.json"
SLICE_PATTERN = "slice_{index:05d}.npz"


class CheckpointMismatchError(ValueError):
    """The folder holds finished slices of a different input or configuration."""


class SliceCheckpoint:
    """Finished slices of one volume reconstruction, keyed by slice index."""

    def __init__(self, folder: Path, fingerprint: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))

    @classmethod
    def open(cls, folder: str | Path, fingerprint: dict[str, Any], restart: bool = False) -> SliceCheckpoint:
        """Open (or create) the checkpoint in ``folder``.

        Raises:
            CheckpointMismatchError: ``folder`` holds slices made with another fingerprint and
                ``restart`` is false.
        """
        checkpoint = cls(Path(folder), fingerprint)
        state_path = checkpoint.folder / STATE_FILE
        if restart:
            checkpoint.clear()
        elif state_path.is_file():
            saved = json.loads(state_path.read_text())
            if saved.get("fingerprint") != checkpoint.fingerprint:
                changed = sorted(
                    key for key in set(saved.get("fingerprint", {})) | set(checkpoint.fingerprint)
                    if saved.get("fingerprint", {}).get(key) != checkpoint.fingerprint.get(key)
                )
                raise CheckpointMismatchError(
                    f"{checkpoint.folder}: partial results were made with different settings "
                    f"(changed: {', '.join(changed)}); rerun with --overwrite to start over"
                )
        checkpoint.folder.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(state_path, json.dumps({"fingerprint": checkpoint.fingerprint}, indent=2).encode())
        return checkpoint

    def done(self) -> set[int]:
        """Indices of the slices already finished."""
        return {int(p.stem.split("_")[1]) for p in self.folder.glob("slice_*.npz")}

    def save(self, index: int, hu: np.ndarray, std_hu: np.ndarray | None, row: dict[str, Any]) -> None:
        """Store slice ``index``: model-grid ``hu`` ``(H, W)``, optional ``std_hu``, its report ``row``."""
        arrays: dict[str, np.ndarray] = {"hu": np.asarray(hu, dtype=np.float32), "row": np.array(json.dumps(row))}
        if std_hu is not None:
            arrays["std_hu"] = np.asarray(std_hu, dtype=np.float32)
        path = self.folder / SLICE_PATTERN.format(index=index)
        tmp = path.with_name("tmp_" + path.name)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """``(hu, std_hu or None, row)`` of a finished slice."""
        with np.load(self.folder / SLICE_PATTERN.format(index=index)) as data:
            std = data["std_hu"] if "std_hu" in data.files else None
            return data["hu"], std, json.loads(str(data["row"]))

    def clear(self) -> None:
        """Delete the folder and everything in it."""
        if self.folder.exists():
            shutil.rmtree(self.folder)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
