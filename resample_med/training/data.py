"""Training slices: HU images from npz files like ``ct_hu256.npz`` or from DICOM / NIfTI volumes.

An npz must hold ``images_hu`` (N, H, W) and may hold per-slice ``split``, ``license_class``,
``source``, ``patient`` arrays used for selection, for patient-balanced sampling and for the data
summary written into the model's ``prior_config.json``. Several npz files are concatenated (for
example ``ct_hu256.npz`` and ``ct_extra_hu256.npz``). Any other path is read with
:func:`resample_med.io.load_volume` (DICOM folder or file, NIfTI) and cut into model-grid slices
with :func:`resample_med.io.iter_model_slices`.

Patient balancing: a few patients contribute most slices of a typical collection (901 of the 1,165
open train slices of ``ct_hu256.npz`` come from 6 patients). ``SliceSet.sampling_weights(b)``
gives slice i of a patient with n_p slices the weight n_p^(-b): b = 0 draws slices uniformly,
b = 1 draws patients uniformly, b = 1/2 lets a patient's share grow with the square root of its
slice count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resample_med.models.config import HU_CLIP
from resample_med.units import hu_to_model


@dataclass(frozen=True)
class SliceSelection:
    """Which npz slices to use: ``split`` values and ``license_class`` values (None = all)."""

    splits: tuple[str, ...] | None = ("train",)
    license_classes: tuple[str, ...] | None = ("open",)


#: The held-out split every training run validates on, whatever its licence (measurement only).
VALIDATION_SELECTION = SliceSelection(splits=("val",), license_classes=None)


@dataclass
class SliceSet:
    """HU slices kept as int16 to halve memory, with a summary of where they come from.

    ``hu``: (N, H, W) int16 tensor, already clipped to ``HU_CLIP``.
    """

    hu: torch.Tensor
    summary: dict[str, Any]
    patient: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.hu.shape[0])

    def sampling_weights(self, patient_balance: float) -> torch.Tensor:
        """Per-slice draw weights (N,) summing to 1: n_p^(-patient_balance) (module docstring).

        Slices without a patient id count as one patient each.
        """
        if self.patient is None or patient_balance == 0.0:
            return torch.full((len(self),), 1.0 / len(self), dtype=torch.float64)
        _, inverse, counts = np.unique(self.patient, return_inverse=True, return_counts=True)
        w = counts[inverse].astype(np.float64) ** (-patient_balance)
        return torch.from_numpy(w / w.sum())

    def draw(self, n: int, patient_balance: float, generator: torch.Generator) -> torch.Tensor:
        """n slice indices (n,) drawn with replacement by ``sampling_weights(patient_balance)``."""
        if patient_balance == 0.0:
            return torch.randint(0, len(self), (n,), generator=generator)
        return torch.multinomial(self.sampling_weights(patient_balance), n, replacement=True, generator=generator)

    def model_units(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Slices ``index`` as float32 model units, shape (B, 1, H, W)."""
        hu = self.hu if index is None else self.hu[index]
        return hu_to_model(hu.float()).unsqueeze(1)


def _summarise(meta: dict[str, np.ndarray], n: int, origin: str) -> dict[str, Any]:
    """Counts of slices per source / licence / split / anatomy and the number of patients."""
    summary: dict[str, Any] = {"origin": origin, "slices": n}
    for key in ("source", "license_class", "split", "anatomy"):
        if key in meta:
            summary[f"slices_per_{key}"] = dict(sorted(Counter(map(str, meta[key])).items()))
    if "patient" in meta:
        summary["patients"] = len(set(map(str, meta["patient"])))
    return summary


def selection_mask(path: Path, npz: Any, selection: SliceSelection) -> np.ndarray:
    """(N,) bool: the slices of the open npz ``npz`` (read from ``path``) that ``selection`` keeps."""
    keep = np.ones(npz["images_hu"].shape[0], dtype=bool)
    for key, allowed in (("split", selection.splits), ("license_class", selection.license_classes)):
        if allowed is None:
            continue
        if key not in npz.files:
            raise ValueError(f"{path}: selection by {key} asked for, but the npz has no '{key}' array")
        keep &= np.isin(npz[key].astype(str), allowed)
    return keep


def load_npz_slices(path: str | Path, selection: SliceSelection = SliceSelection()) -> SliceSet:
    """Slices of an npz selected by split and licence class."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training data npz not found")
    with np.load(path) as npz:
        if "images_hu" not in npz.files:
            raise ValueError(f"{path}: npz has no 'images_hu' array (keys: {npz.files})")
        keep = selection_mask(path, npz, selection)
        if not keep.any():
            raise ValueError(f"{path}: no slice matches {selection}")
        hu = np.clip(npz["images_hu"][keep], *HU_CLIP).astype(np.int16)
        meta = {k: npz[k][keep] for k in ("source", "license_class", "split", "anatomy", "patient") if k in npz.files}
    patient = np.char.add(f"{path.name}:", meta["patient"].astype(str)) if "patient" in meta else None
    return SliceSet(torch.from_numpy(hu), _summarise(meta, int(keep.sum()), str(path.name)), patient)


def concat_slice_sets(sets: Sequence[SliceSet]) -> SliceSet:
    """One set of the slices of ``sets`` in order; the summary lists each part's summary."""
    if len(sets) == 1:
        return sets[0]
    patients = [
        s.patient if s.patient is not None else np.array([f"?{i}:{j}" for j in range(len(s))])
        for i, s in enumerate(sets)
    ]
    summary = {
        "origin": [s.summary.get("origin") for s in sets],
        "slices": sum(len(s) for s in sets),
        "patients": len(set(np.concatenate(patients))),
        "parts": [s.summary for s in sets],
    }
    return SliceSet(torch.cat([s.hu for s in sets]), summary, np.concatenate(patients))


def load_volume_slices(paths: Sequence[str | Path], image_size: int = 256) -> SliceSet:
    """Axial slices of DICOM series / NIfTI volumes resampled to the model grid."""
    from resample_med.io import iter_model_slices, load_volume  # lazy: only for DICOM/NIfTI training

    slices: list[np.ndarray] = []
    for p in paths:
        volume = load_volume(p)
        slices.extend(s.hu for s in iter_model_slices(volume, size=image_size))
    if not slices:
        raise ValueError(f"{', '.join(map(str, paths))}: no slices found")
    hu = np.clip(np.stack(slices), *HU_CLIP).astype(np.int16)
    summary = {"origin": "volumes", "slices": len(slices), "volumes": [str(p) for p in paths]}
    return SliceSet(torch.from_numpy(hu), summary)


def load_slices(paths: Sequence[str | Path], selection: SliceSelection = SliceSelection()) -> SliceSet:
    """npz files (each selected by ``selection``, concatenated) or any number of DICOM folders / NIfTI files."""
    files = [Path(p) for p in paths]
    npz = [p for p in files if p.suffix == ".npz"]
    if npz and len(npz) != len(paths):
        raise ValueError(f"{', '.join(map(str, paths))}: give either npz files or DICOM/NIfTI paths, not a mix")
    if npz:
        return concat_slice_sets([load_npz_slices(p, selection) for p in npz])
    return load_volume_slices(paths)


def load_validation_slices(paths: Sequence[str | Path], selection: SliceSelection) -> SliceSet | None:
    """The held-out slices (``selection``, e.g. split 'val') of every npz in ``paths`` that has any.

    None when no path is an npz or none holds a matching slice (DICOM / NIfTI training has no
    validation split).
    """
    sets = []
    for p in map(Path, paths):
        if p.suffix != ".npz":
            return None
        try:
            sets.append(load_npz_slices(p, selection))
        except ValueError:
            continue
    return concat_slice_sets(sets) if sets else None
