"""A carry-sized copy of the training slices: npz parts of at most ``max_mib`` each, every patient whole.

A lent GPU machine receives at most 64 MiB per call, the project's own tree (25 MiB, the
shipped prior included) counted in (../shared/DESIGN.md), while the open training slices take
111 MB in ``ct_hu256.npz`` and 21 MB in ``ct_extra_hu256.npz``. :func:`pack_slices` writes the
slices a training run reads, the training selection and the held-out split it validates on, as
npz files whose arrays are LZMA-compressed inside the zip (``np.load`` reads them like any npz),
each under ``max_mib``, so that they travel one or two per call and ``resample-med train ...
--data PACK/*.npz`` reads them like the originals (same ``split``, ``license_class``, ``source``,
``anatomy`` and ``patient`` arrays).

``hu_step`` rounds HU to a multiple of it: 4 HU (error at most 2 HU, RMS 1.2 HU, against the
autoencoder's 23 HU and a scanner's noise of 10 HU and more) shrinks the LZMA-compressed slices
from about 57 to 41 KB each (1,528 slices: 57.4 MiB measured, against about 87 MB exact);
1 keeps them exact.

A patient's slices all go into one part: patient balancing (``SliceSet.sampling_weights``) counts
a patient per npz file (its ids are prefixed with the file name), so a patient split over two parts
would be drawn as two patients. Patient ids are stored prefixed with their source npz's name, so
that ids repeated across sources stay apart. ``PACK.json`` beside the parts records the sources
(name, SHA-256), the selections, ``hu_step`` and every part's slices, patients, bytes and SHA-256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import lzma
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resample_med.io.errors import OutputPathError
from resample_med.models.config import HU_CLIP
from resample_med.training.data import VALIDATION_SELECTION, SliceSelection, selection_mask
from resample_med.training.runtime import write_json

#: Per-slice arrays a part carries when every source has them (the loader reads all but ``license``,
#: which names the licence for the model card).
META_KEYS = ("split", "license_class", "license", "source", "anatomy", "patient")
MANIFEST = "PACK.json"
#: A device call carries 64 MiB: the project's tree (25 MiB) and diffusers' wheels (6.1 MiB) leave
#: room for one part of 32 MiB (CONTRIBUTING.md).
DEFAULT_MAX_MIB = 32.0
#: Room left in a part for the zip's headers, the per-slice arrays and the estimate's error.
_MARGIN = 0.95
#: The share of a patient's slices compressed to estimate the patient's bytes.
_ESTIMATE_FRACTION = 0.25


@dataclass(frozen=True)
class PackedPart:
    """One written part: its file, how many slices and patients it holds, its size and SHA-256."""

    path: Path
    slices: int
    patients: int
    bytes: int
    sha256: str


def pack_slices(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    max_mib: float = DEFAULT_MAX_MIB,
    hu_step: int = 1,
    selections: Sequence[SliceSelection] = (SliceSelection(), VALIDATION_SELECTION),
) -> list[PackedPart]:
    """Write the slices of the npz files ``paths`` that match any of ``selections`` into
    ``out_dir/part-K-of-N.npz``, each at most ``max_mib`` MiB, every patient in one part.

    Raises :class:`OutputPathError` when ``out_dir`` already holds npz files (nothing is overwritten),
    ``FileNotFoundError`` for a path that is no npz file and ``ValueError`` for an npz without the
    arrays a pack needs, a selection that keeps nothing or a patient too large for ``max_mib``.
    """
    if hu_step < 1:
        raise ValueError(f"--hu-step must be a positive number of HU, got {hu_step}")
    out = Path(out_dir)
    existing = sorted(out.glob("*.npz")) if out.is_dir() else []
    if existing:
        raise OutputPathError(out, f"already holds {existing[0].name}; pack into a new or empty folder (--out)")
    hu, meta, sources = _selected_slices([Path(p) for p in paths], selections)
    if hu_step > 1:
        hu = ((hu.astype(np.int32) + hu_step // 2) // hu_step * hu_step).clip(*HU_CLIP).astype(np.int16)
    limit = max_mib * 2**20
    groups = _patient_groups(meta)
    estimates = {patient: _estimated_bytes(hu[index]) for patient, index in groups.items()}
    for patient, size in estimates.items():
        if size > limit * _MARGIN:
            raise ValueError(
                f"patient {patient}: its {len(groups[patient])} slices compress to about {size / 2**20:.1f} MiB, "
                f"more than --max-mib {max_mib:g} holds; raise --max-mib or --hu-step"
            )
    bins = _first_fit_decreasing(estimates, limit * _MARGIN)
    out.mkdir(parents=True, exist_ok=True)
    parts: list[PackedPart] = []
    for k, patients in enumerate(bins, start=1):
        index = np.sort(np.concatenate([groups[p] for p in patients]))
        path = out / f"part-{k}-of-{len(bins)}.npz"
        _write_lzma_npz(path, {"images_hu": hu[index], **{key: values[index] for key, values in meta.items()}})
        size = path.stat().st_size
        if size > limit:
            for written in [*(p.path for p in parts), path]:
                written.unlink()  # this call's own parts: a retry may use the same folder
            raise RuntimeError(
                f"{path}: {size / 2**20:.1f} MiB, more than --max-mib {max_mib:g} (the size estimate was off); "
                "pack again with a smaller --max-mib"
            )
        parts.append(PackedPart(path, len(index), len(patients), size, _file_sha256(path)))
    write_json(
        out / MANIFEST,
        {
            "sources": sources,
            "selections": [dataclasses.asdict(s) for s in selections],
            "hu_step": hu_step,
            "max_mib": max_mib,
            "slices": int(sum(p.slices for p in parts)),
            "parts": [{**dataclasses.asdict(p), "path": p.path.name} for p in parts],
        },
    )
    return parts


def _selected_slices(
    paths: list[Path], selections: Sequence[SliceSelection]
) -> tuple[np.ndarray, dict[str, np.ndarray], list[dict[str, Any]]]:
    """HU (N, H, W) int16 clipped to ``HU_CLIP``, the per-slice ``META_KEYS`` every source has, and
    each source's name, SHA-256 and selected slice count."""
    images, metas, sources = [], [], []
    for path in paths:
        if not path.is_file() or path.suffix != ".npz":
            raise FileNotFoundError(f"{path}: not an npz file (train pack reads npz files like ct_hu256.npz)")
        with np.load(path) as npz:
            if "images_hu" not in npz.files or "patient" not in npz.files:
                raise ValueError(f"{path}: a pack needs 'images_hu' and 'patient' arrays (keys: {npz.files})")
            keep = np.zeros(npz["images_hu"].shape[0], dtype=bool)
            for selection in selections:
                keep |= selection_mask(path, npz, selection)
            images.append(np.clip(npz["images_hu"][keep], *HU_CLIP).astype(np.int16))
            meta = {key: npz[key][keep].astype(str) for key in META_KEYS if key in npz.files}
        meta["patient"] = np.char.add(f"{path.name}:", meta["patient"])
        metas.append(meta)
        sources.append({"file": path.name, "sha256": _file_sha256(path), "slices": int(keep.sum())})
    if not sum(len(i) for i in images):
        raise ValueError(f"{', '.join(map(str, paths))}: no slice matches {list(selections)}")
    common = [key for key in META_KEYS if all(key in m for m in metas)]
    return np.concatenate(images), {key: np.concatenate([m[key] for m in metas]) for key in common}, sources


def _patient_groups(meta: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Patient id -> indices of its slices, in order of first appearance."""
    ids, first, inverse = np.unique(meta["patient"], return_index=True, return_inverse=True)
    return {str(ids[i]): np.flatnonzero(inverse == i) for i in np.argsort(first)}


def _estimated_bytes(hu: np.ndarray) -> float:
    """LZMA bytes of the (n, H, W) slices of one patient, from a contiguous block of a
    ``_ESTIMATE_FRACTION`` of them in the middle (neighbouring slices compress together, so a
    block estimates the whole better than scattered slices do)."""
    n = len(hu)
    size = max(1, round(n * _ESTIMATE_FRACTION))
    start = (n - size) // 2
    return len(lzma.compress(hu[start : start + size].tobytes())) * n / size


def _first_fit_decreasing(sizes: dict[str, float], capacity: float) -> list[list[str]]:
    """Patients into as few bins of ``capacity`` as first-fit decreasing finds, each bin's patients
    in their original order."""
    order = list(sizes)
    bins: list[list[str]] = []
    room: list[float] = []
    for patient in sorted(order, key=lambda p: -sizes[p]):
        k = next((i for i, r in enumerate(room) if sizes[patient] <= r), None)
        if k is None:
            bins.append([])
            room.append(capacity)
            k = len(bins) - 1
        bins[k].append(patient)
        room[k] -= sizes[patient]
    return [sorted(b, key=order.index) for b in bins]


def _write_lzma_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An npz (a zip of .npy files, as ``np.savez``) with LZMA-compressed members, written to a
    temporary name and then renamed, so that a stopped run leaves no partial part."""
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_LZMA) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    partial.replace(path)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
