"""Resumable state of a volume reconstruction: finished slices kept on disk, each with its checksum.

A :class:`SliceCheckpoint` is a folder (the CLI uses ``OUTPUT/<series>/.partial/``) holding
``state.json`` (a fingerprint of the input and the resolved configuration, and the SHA-256 of every
finished slice file) and one ``slice_<index>.npz`` per finished slice (model-grid HU, optional std,
its report row). Each slice file is written atomically and its checksum recorded after it, so an
interruption (Ctrl-C, SIGKILL) at any moment leaves only complete, verifiable slices; a later run
with the same fingerprint skips them. A slice file whose checksum does not match (truncated, altered
on disk) or is missing is deleted and recomputed, with a :class:`CheckpointWarning`. A different
fingerprint is refused unless the caller asks to start over.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

STATE_FILE = "state.json"
SLICE_PATTERN = "slice_{index:05d}.npz"
TEMPORARY_PREFIX = "tmp_"
"""Slice files being written; any found when a checkpoint is opened were left by a killed run."""


class CheckpointMismatchError(ValueError):
    """The folder holds finished slices of a different input or configuration."""


class CheckpointWarning(UserWarning):
    """A checkpoint slice failed its checksum and is recomputed."""


def fingerprint_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The fields in which two fingerprints differ, one level deep (``acquisition.n_views``), sorted."""
    changed: list[str] = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changed.extend(f"{key}.{sub}" for sub in sorted(set(old) | set(new)) if old.get(sub) != new.get(sub))
        else:
            changed.append(key)
    return changed


def as_json(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as it reads back from JSON (tuples become lists, paths strings), for comparisons."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


class SliceCheckpoint:
    """Finished slices of one volume reconstruction, keyed by slice index."""

    def __init__(self, folder: Path, fingerprint: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.fingerprint = as_json(fingerprint)
        self._checksums: dict[str, str] = {}

    @classmethod
    def open(cls, folder: str | Path, fingerprint: dict[str, Any], restart: bool = False) -> SliceCheckpoint:
        """Open (or create) the checkpoint in ``folder``, verifying every finished slice.

        Raises:
            CheckpointMismatchError: ``folder`` holds slices made with another fingerprint and
                ``restart`` is false.
        """
        checkpoint = cls(Path(folder), fingerprint)
        state_path = checkpoint.folder / STATE_FILE
        if restart:
            checkpoint.clear()
        elif state_path.is_file():
            saved = checkpoint._read_state()
            if saved.get("fingerprint") != checkpoint.fingerprint:
                changed = fingerprint_differences(saved.get("fingerprint", {}), checkpoint.fingerprint)
                raise CheckpointMismatchError(
                    f"{checkpoint.folder}: partial results were made with different settings "
                    f"(changed: {', '.join(changed)}); rerun with --overwrite to start over"
                )
            checkpoint._checksums = {str(k): str(v) for k, v in saved.get("checksums", {}).items()}
        checkpoint.folder.mkdir(parents=True, exist_ok=True)
        for leftover in checkpoint.folder.glob(f"{TEMPORARY_PREFIX}*"):
            leftover.unlink()
        checkpoint._verify()
        checkpoint._write_state()
        return checkpoint

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {"fingerprint": None}
        return state if isinstance(state, dict) else {"fingerprint": None}

    def _verify(self) -> None:
        """Keep the checksums of slice files that match them; delete (with a warning) every other slice file."""
        verified: dict[str, str] = {}
        for path in sorted(self.folder.glob("slice_*.npz")):
            index = path.stem.split("_")[1]
            expected = self._checksums.get(str(int(index))) if index.isdigit() else None
            if expected is not None and _sha256(path.read_bytes()) == expected:
                verified[str(int(index))] = expected
                continue
            problem = "has no recorded checksum" if expected is None else "does not match its checksum"
            warnings.warn(
                f"{path}: checkpoint slice {problem} (truncated or altered); deleted, recomputing it",
                CheckpointWarning,
                stacklevel=3,
            )
            path.unlink()
        self._checksums = verified

    def _write_state(self) -> None:
        state = {"fingerprint": self.fingerprint, "checksums": self._checksums}
        _atomic_write_bytes(self.folder / STATE_FILE, json.dumps(state, indent=2).encode())

    def done(self) -> set[int]:
        """Indices of the slices already finished (and verified when the checkpoint was opened)."""
        return {int(k) for k in self._checksums}

    def save(self, index: int, hu: np.ndarray, std_hu: np.ndarray | None, row: dict[str, Any]) -> None:
        """Store slice ``index``: model-grid ``hu`` ``(H, W)``, optional ``std_hu``, its report ``row``."""
        arrays: dict[str, np.ndarray] = {"hu": np.asarray(hu, dtype=np.float32), "row": np.array(json.dumps(row))}
        if std_hu is not None:
            arrays["std_hu"] = np.asarray(std_hu, dtype=np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        data = buffer.getvalue()
        path = self.folder / SLICE_PATTERN.format(index=index)
        tmp = path.with_name(TEMPORARY_PREFIX + path.name)
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self._checksums[str(index)] = _sha256(data)
        self._write_state()

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """``(hu, std_hu or None, row)`` of a finished slice."""
        with np.load(self.folder / SLICE_PATTERN.format(index=index)) as data:
            std = data["std_hu"] if "std_hu" in data.files else None
            return data["hu"], std, json.loads(str(data["row"]))

    def clear(self) -> None:
        """Delete the folder and everything in it."""
        self._checksums = {}
        if self.folder.exists():
            shutil.rmtree(self.folder)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename."""
    tmp = path.with_name(TEMPORARY_PREFIX + path.name)
    tmp.write_bytes(data)
    os.replace(tmp, path)
