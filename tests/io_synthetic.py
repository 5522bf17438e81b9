"""Synthetic DICOM series written with pydicom for the io tests (no real data needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

STANDARD_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def slice_hu(k: int, rows: int, cols: int) -> np.ndarray:
    """(rows, cols) HU that identify slice ``k``: a disc of 100 * k HU in air, plus a column ramp."""
    yy, xx = np.mgrid[:rows, :cols]
    disc = (yy - rows / 2) ** 2 + (xx - cols / 2) ** 2 < (min(rows, cols) / 3) ** 2
    return np.where(disc, 100.0 * k, -1000.0).astype(np.float32) + xx.astype(np.float32)


def write_slice(
    path: Path,
    hu: np.ndarray,
    *,
    position: Sequence[float] | None,
    orientation: Sequence[float] | None = STANDARD_IOP,
    spacing: Sequence[float] | None = (0.8, 0.7),
    series_uid: str,
    study_uid: str,
    frame_uid: str,
    modality: str = "CT",
    series_number: int | None = 1,
    description: str = "synthetic",
    instance_number: int | None = 1,
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
) -> Path:
    """Write one single-frame int16 slice; any attribute given as None is left out."""
    meta = FileMetaDataset()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    sop_uid = generate_uid()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.Modality = modality
    ds.PatientName, ds.PatientID = "SYNTHETIC^TEST", "SYN001"
    ds.SliceThickness = 2.5
    if series_number is not None:
        ds.SeriesNumber = series_number
    if description:
        ds.SeriesDescription = description
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    if spacing is not None:
        ds.PixelSpacing = [float(v) for v in spacing]
    s = 1.0 if slope is None else slope
    b = 0.0 if intercept is None else intercept
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.round((hu - b) / s).astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    n: int = 6,
    *,
    rows: int = 24,
    cols: int = 20,
    z0: float = -10.0,
    dz: float = 2.5,
    orientation: Sequence[float] = STANDARD_IOP,
    instance_numbers: Sequence[int | None] | None = None,
    skip: Sequence[int] = (),
    prefix: str = "s",
    **slice_kwargs: object,
) -> tuple[list[Path], np.ndarray, str]:
    """Write slices k = 0..n-1 (minus ``skip``) at z0 + k dz along the slice normal.

    Returns:
        (paths, expected (Z, rows, cols) HU in position order, SeriesInstanceUID).
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = str(slice_kwargs.pop("series_uid", generate_uid()))
    study_uid = str(slice_kwargs.pop("study_uid", generate_uid()))
    frame_uid = str(slice_kwargs.pop("frame_uid", generate_uid()))
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    paths, expected = [], []
    for k in range(n):
        if k in skip:
            continue
        hu = slice_hu(k, rows, cols)
        number = (k + 1) if instance_numbers is None else instance_numbers[k]
        paths.append(
            write_slice(
                folder / f"{prefix}{k:03d}.dcm",
                hu,
                position=(z0 + k * dz) * normal + np.array([-8.0, -9.0, 0.0]),
                orientation=orientation,
                series_uid=series_uid,
                study_uid=study_uid,
                frame_uid=frame_uid,
                instance_number=number,
                **slice_kwargs,  # type: ignore[arg-type]
            )
        )
        expected.append(hu)
    return paths, np.stack(expected), series_uid
