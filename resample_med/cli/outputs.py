"""Where ``resample-med reconstruct`` writes, and whether it may: OUT, its series folders, its lock, its fingerprints.

* Every series folder is ``OUT/<label>`` resolved and checked to lie inside OUT before anything is
  written or removed (:meth:`OutputSession.series_folder`).
* OUT is created, and locked against a second run, only when the first input has loaded
  (:meth:`OutputSession.prepare`); leftovers of a killed run (temporary folders and files) are
  removed then, under the lock.
* What a series folder was made from is its fingerprint (:func:`fingerprint`): the input's identity
  (path, series UID, a digest of its SOP instances or file content) and every setting the slices
  depend on. A finished output (``report.json``) is trusted only for the same fingerprint
  (:func:`finished`), as the checkpoint of a half-finished one is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from resample_med.cli.inputs import Job
from resample_med.io.errors import OutputPathError
from resample_med.io.output_paths import (
    OutputLock,
    atomic_file,
    inside,
    remove_owned,
    remove_stale_temporaries,
)
from resample_med.pipeline.checkpoint import CheckpointMismatchError, as_json, fingerprint_differences

FINGERPRINT_KEY = "fingerprint"
"""Where ``report.json`` keeps the fingerprint of the run that wrote it."""

_CHUNK = 1 << 20


def input_identity(job: Job) -> dict[str, Any]:
    """What identifies the input of ``job`` without decoding it: path, series UID and a SHA-256 of
    its SOP instance UIDs (DICOM) or of its bytes (NIfTI, sinogram file and its ``.json``)."""
    digest = hashlib.sha256()
    if job.series is not None:
        for record in sorted(job.series.records, key=lambda r: (r.sop_instance_uid, str(r.path))):
            digest.update(f"{record.sop_instance_uid}|{record.path.name}\n".encode())
    else:
        for path in (job.path, job.path.with_suffix(".json")) if job.path.suffix == ".npy" else (job.path,):
            if path.is_file():
                with path.open("rb") as stream:
                    while chunk := stream.read(_CHUNK):
                        digest.update(chunk)
    return {
        "input": str(job.path.resolve()),
        "series": None if job.series is None else job.series.uid,
        "content_sha256": digest.hexdigest(),
    }


def fingerprint(job: Job, settings: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint of ``job`` run with ``settings`` (method, preset, sampler, acquisition, model,
    seed, slices, ...), as it reads back from JSON."""
    return as_json({**input_identity(job), **settings})


def finished(out_dir: Path, report_file: str, current: dict[str, Any], overwrite: bool) -> bool:
    """Whether ``out_dir`` holds a finished output of exactly ``current`` (then there is nothing to do).

    Raises:
        CheckpointMismatchError: it holds a finished output of another input or other settings
            and ``overwrite`` is false (the message lists the differing fields).
    """
    report_path = out_dir / report_file
    if not report_path.is_file():
        return False
    try:
        saved = json.loads(report_path.read_text()).get(FINGERPRINT_KEY)
    except (OSError, ValueError, AttributeError):
        saved = None
    if saved == current:
        return True
    if overwrite:
        return False
    changed = (
        fingerprint_differences(saved, current)
        if isinstance(saved, dict)
        else ["(no fingerprint: written by an older resample-med or damaged)"]
    )
    raise CheckpointMismatchError(
        f"{out_dir}: holds a finished reconstruction of a different input or with different settings "
        f"(differs: {', '.join(changed)}); choose another output folder, or pass --overwrite to replace it"
    )


def write_json(path: Path, data: Any) -> Path:
    """``data`` as indented JSON at ``path``, written atomically."""
    with atomic_file(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2))
    return path


class OutputSession:
    """OUT for one ``reconstruct`` command: checked at once, created and locked when first written.

    Use as a context manager; the lock (if taken) is released on exit.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stack = ExitStack()
        self.created = False
        OutputLock.check_free(root)

    def __enter__(self) -> OutputSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def series_folder(self, label: str) -> Path:
        """``OUT/<label>`` resolved, checked to lie inside OUT (``label`` "" is OUT itself)."""
        return inside(self.root, label)

    def prepare(self, out_dir: Path, owned: Iterable[str], overwrite: bool) -> None:
        """Make ``out_dir`` ready to write: OUT created and locked (the first time), leftovers of
        killed runs removed, and with ``overwrite`` the ``owned`` outputs of earlier runs deleted.

        Raises:
            OutputInUseError: another run holds OUT.
            OutputPathError: ``out_dir`` is a file, or lies outside OUT.
        """
        if not self.created:
            self._stack.enter_context(OutputLock(self.root))
            self.created = True
            remove_stale_temporaries(self.root)
        out_dir = inside(self.root, str(out_dir.relative_to(self.root)))  # checked again right before writing
        if out_dir.exists() and not out_dir.is_dir():
            raise OutputPathError(out_dir, "is a file, not a folder; move it away or choose another output folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out_dir)
        if overwrite:
            remove_owned(out_dir, owned)
