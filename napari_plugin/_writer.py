"""napari writer contribution: save an image layer as a derived DICOM CT series (a folder).

File > Save Selected Layer(s) with a name ending in ``.dcm`` (``recon.dcm``) writes the folder
``recon/`` holding one DICOM file per slice through :func:`resample_med.io.write_derived_series`:
geometry from the layer's ``scale`` (mm) and ``translate`` (the LPS position of the first voxel, z,
y, x), direction cosines and DICOM identifiers (study, frame of reference, patient, source series)
from the metadata our reader puts on a layer. A layer without them (a reconstruction, a std map,
a plain array) becomes a series of a new study with identity orientation; the writer warns so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DICOM_SUFFIX = ".dcm"
DEFAULT_SLICE_SPACING_MM = 1.0
"""Slice spacing written for a 2D layer whose metadata names none."""


def write_dicom_series(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: ``data`` ``(Z, Y, X)`` or ``(Y, X)`` HU -> derived series folder.

    Returns:
        ``[folder]``, the written series folder (``path`` without its ``.dcm`` suffix).
    """
    from resample_med.io import CTVolume, write_derived_series

    hu = np.asarray(data, dtype=np.float32)
    if hu.ndim == 2:
        hu = hu[None]
    if hu.ndim != 3:
        raise ValueError(f"{path}: a DICOM series needs a 2D or 3D image layer, this one has shape {np.shape(data)}")
    metadata = dict(meta.get("metadata") or {})
    scale = [float(s) for s in meta.get("scale", (1.0,) * hu.ndim)][-3:]
    translate = [float(t) for t in meta.get("translate", (0.0,) * hu.ndim)][-3:]
    if len(scale) == 2:
        spacing_z = float(metadata.get("spacing_mm", (DEFAULT_SLICE_SPACING_MM,))[0])
        scale, translate = [spacing_z, *scale], [0.0, *translate]
    volume = CTVolume(
        hu=hu,
        spacing_mm=(scale[0], scale[1], scale[2]),
        origin_mm=np.asarray(translate[::-1], dtype=np.float64),
        direction=np.asarray(metadata.get("direction", np.eye(3)), dtype=np.float64),
        source=dict(metadata.get("source") or {}),
    )
    folder = Path(path)
    if folder.name.lower().endswith(DICOM_SUFFIX):
        folder = folder.with_name(folder.name[: -len(DICOM_SUFFIX)])
    name = str(meta.get("name", "layer"))
    method = str(metadata.get("method", "napari"))
    written = write_derived_series(
        volume, hu, folder, method=method, description=name[:40], derivation=f"Saved from the napari layer '{name}'."
    )
    return [str(written)]
