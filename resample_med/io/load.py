"""One entry point for any CT input path: DICOM folder, DICOM file or NIfTI file."""

from __future__ import annotations

import os

from resample_med.io.dicom_reader import load_series
from resample_med.io.nifti import is_nifti, load_nifti
from resample_med.io.volume import CTVolume


def load_volume(path: str | os.PathLike[str], series: str | int | None = None) -> CTVolume:
    """Load a CT volume in HU from a DICOM folder (recursive), a DICOM file or a NIfTI file.

    Args:
        path: the input.
        series: for DICOM folders, a SeriesInstanceUID, SeriesNumber or description substring;
            None picks the largest axial CT series. Ignored for NIfTI.

    Returns:
        :class:`CTVolume` with (Z, Y, X) float32 HU.

    Raises:
        DicomInputError: naming the path and the problem.
    """
    if is_nifti(path):
        return load_nifti(path)
    return load_series(path, series)
