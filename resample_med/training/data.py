"""Training slices: HU images from an npz like ``ct_hu256.npz`` or from DICOM / NIfTI volumes.

An npz must hold ``images_hu`` (N, H, W) and may hold per-slice ``split``, ``license_class``,
``source``, ``patient`` arrays used for selection and for the data summary written into the model's
``prior_config.json``. Any other path is read with :func:`resample_med.io.load_volume` (DICOM
folder or file, NIfTI) and cut into model-grid slices with :func:`resample_med.io.iter_model_slices`.
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


@dataclass
class SliceSet:
    """HU slices kept as int16 to halve memory, with a summary of where they come from.

    ``hu``: (N, H, W) int16 tensor, already clipped to ``HU_CLIP``.
    """

    hu: torch.Tensor
    summary: dict[str, Any]

    def __len__(self) -> int:
        return int(self.hu.shape[0])

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


def load_npz_slices(path: str | Path, selection: SliceSelection = SliceSelection()) -> SliceSet:
    """Slices of an npz selected by split and licence class."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training data npz not found")
    with np.load(path) as npz:
        if "images_hu" not in npz.files:
            raise ValueError(f"{path}: npz has no 'images_hu' array (keys: {npz.files})")
        keep = np.ones(npz["images_hu"].shape[0], dtype=bool)
        for key, allowed in (("split", selection.splits), ("license_class", selection.license_classes)):
            if allowed is None:
                continue
            if key not in npz.files:
                raise ValueError(f"{path}: selection by {key} asked for, but the npz has no '{key}' array")
            keep &= np.isin(npz[key].astype(str), allowed)
        if not keep.any():
            raise ValueError(f"{path}: no slice matches {selection}")
        hu = np.clip(npz["images_hu"][keep], *HU_CLIP).astype(np.int16)
        meta = {k: npz[k][keep] for k in ("source", "license_class", "split", "anatomy", "patient") if k in npz.files}
    return SliceSet(torch.from_numpy(hu), _summarise(meta, int(keep.sum()), str(path.name)))


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
    """One npz (selected by ``selection``) or any number of DICOM folders / NIfTI files."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].suffix == ".npz":
        return load_npz_slices(paths[0], selection)
    if any(p.suffix == ".npz" for p in paths):
        raise ValueError(f"{', '.join(map(str, paths))}: give either one npz or DICOM/NIfTI paths, not a mix")
    return load_volume_slices(paths)
