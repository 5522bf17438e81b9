"""napari reader contribution: DICOM folders, DICOM files and NIfTI volumes as HU image layers.

All parsing (series choice, slice order along the normal, RescaleSlope/Intercept, spacing) happens in
:func:`resample_med.io.load_volume`; this module only decides which paths it claims and turns a
:class:`resample_med.io.CTVolume` into a napari layer placed in millimetres: ``scale`` = voxel
spacing (z, y, x) and ``translate`` = the LPS position of the first voxel in (z, y, x) order. The
layer axes are the volume's own (slice, row, column) axes: an oblique or gantry-tilted series is
shown in its acquisition plane, not rotated (its direction cosines are kept in the layer metadata),
which is how CT viewers show tilted axial series and keeps napari's 2D slicing orthogonal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_plugin._display import DEFAULT_WINDOW, WINDOW_PRESETS
from resample_med.io.nifti import NIFTI_SUFFIXES

if TYPE_CHECKING:
    from resample_med.io import CTVolume

LayerData = tuple[np.ndarray, dict[str, Any], str]

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".ima")
DICOM_MAGIC_OFFSET = 128
"""DICOM Part 10 files carry the magic ``b"DICM"`` after a 128-byte preamble."""
DICOM_MAGIC = b"DICM"
MAX_FILES_PROBED = 64
"""How many files of a folder :func:`get_reader` inspects before it declines the folder."""


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """npe2 ``get_reader``: :func:`read_ct` when ``path`` is a NIfTI file, a DICOM file or a folder
    holding DICOM files (searched recursively); ``None`` otherwise so napari tries other readers."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    candidate = Path(path)
    if candidate.is_dir():
        return read_ct if _folder_has_dicom(candidate) else None
    name = candidate.name.lower()
    if name.endswith(NIFTI_SUFFIXES) or name.endswith(DICOM_SUFFIXES) or _is_dicom_file(candidate):
        return read_ct
    return None


def read_ct(path: str | list[str]) -> list[LayerData]:
    """Load ``path`` with :func:`resample_med.io.load_volume` into one HU image layer."""
    from resample_med.io import load_volume

    if isinstance(path, list):
        path = path[0]
    volume = load_volume(path)
    return [volume_layer_data(volume, name=Path(path).name.removesuffix(".gz").removesuffix(".nii"))]


def volume_layer_data(volume: CTVolume, name: str) -> LayerData:
    """A CT volume as a napari image ``LayerData`` tuple: HU data (Z, Y, X) float32, placed in mm.

    The layer metadata keeps ``spacing_mm``, ``origin_mm`` (LPS x, y, z), ``direction`` and the DICOM
    identifiers of ``volume.source`` so the reconstruction widget can report where results came from.
    """
    hu = np.asarray(volume.hu, dtype=np.float32)
    spacing = np.asarray(volume.spacing_mm, dtype=float)
    origin_xyz = np.asarray(volume.origin_mm, dtype=float)
    direction = np.asarray(volume.direction, dtype=float)
    window = WINDOW_PRESETS[DEFAULT_WINDOW]
    kwargs = {
        "name": name,
        "scale": tuple(spacing),
        "translate": tuple(origin_xyz[::-1]),
        "colormap": "gray",
        "contrast_limits": window.limits,
        "metadata": {
            "spacing_mm": tuple(float(s) for s in spacing),
            "origin_mm": tuple(float(o) for o in origin_xyz),
            "direction": direction.tolist(),
            "source": {key: value for key, value in volume.source.items() if _is_plain(value)},
            "units": "HU",
        },
    }
    return hu, kwargs, "image"


def _is_plain(value: object) -> bool:
    """Whether ``value`` is worth keeping in layer metadata: a scalar (UIDs, IDs, names) or a mapping of
    scalars (the patient/study header a derived DICOM series copies)."""
    if isinstance(value, dict):
        return all(isinstance(v, (str, int, float, bool)) for v in value.values())
    return isinstance(value, (str, int, float, bool))


def _is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a readable file with the DICOM Part 10 magic bytes."""
    try:
        with path.open("rb") as handle:
            handle.seek(DICOM_MAGIC_OFFSET)
            return handle.read(len(DICOM_MAGIC)) == DICOM_MAGIC
    except OSError:
        return False


def _folder_has_dicom(folder: Path) -> bool:
    """Whether one of the first :data:`MAX_FILES_PROBED` files below ``folder`` is DICOM."""
    probed = 0
    for root, _dirs, files in os.walk(folder):
        for file_name in sorted(files):
            if _is_dicom_file(Path(root) / file_name):
                return True
            probed += 1
            if probed >= MAX_FILES_PROBED:
                return False
    return False
