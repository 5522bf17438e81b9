"""One entry point for any CT input path: DICOM folder, DICOM file or NIfTI file."""

from __future__ import annotations

import os

from resample_med.io.dicom_reader import load_series
from resample_med.io.nifti import is_nifti, load_nifti
from resample_med.io.volume import CTVolume


def load_volume(
    path: str | os.PathLike[str],
    series: str | int | None = None,
    *,
    description: str | None = None,
    skip_bad_slices: bool = False,
    fill_nonfinite: float | None = None,
) -> CTVolume:
    """Load a CT volume in HU from a DICOM folder (recursive), a DICOM file or a NIfTI file.

    Args:
        path: the input.
        series: for DICOM folders, a SeriesInstanceUID or SeriesNumber; None picks the largest
            axial CT series. Ignored for NIfTI.
        description: for DICOM folders, choose the series by a part of its SeriesDescription.
        skip_bad_slices: DICOM: leave bad files out instead of refusing the series.
        fill_nonfinite: NIfTI: HU value for NaN/Inf voxels instead of refusing the volume.

    Returns:
        :class:`CTVolume` with (Z, Y, X) float32 HU.

    Raises:
        DicomInputError: naming the path and the problem.
    """
    if is_nifti(path):
        return load_nifti(path, fill_nonfinite)
    return load_series(path, series, description=description, skip_bad_slices=skip_bad_slices)
