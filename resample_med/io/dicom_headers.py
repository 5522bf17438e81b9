"""Reading the header of one DICOM file into a small, validated record.

Only the attributes the reader needs are pulled out, each converted inside one guard, so a
malformed value becomes a :class:`~resample_med.io.errors.DicomInputError` naming the file and
the attribute instead of an exception from pydicom's lazy value conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from resample_med.io.errors import DicomInputError

CT_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"})
"""CT Image Storage and Enhanced CT Image Storage: a file of these classes is CT without Modality."""

MAX_MATRIX = 4096
"""Largest Rows or Columns accepted; larger values are treated as a corrupted header."""

ORIENTATION_TOLERANCE = 1e-3
"""Largest difference between ImageOrientationPatient components of slices in one series."""

AXIAL_MAX_TILT_DEG = 45.0
"""A slice whose normal is within this angle of the patient z axis is axial (gantry tilt allowed)."""

PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "SpecificCharacterSet",
    "Manufacturer",
    "InstitutionName",
    "KVP",
    "PatientPosition",
    "BodyPartExamined",
    "Laterality",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
)
"""Attributes copied from the source into derived series (patient, study, body part, frame of reference)."""


@dataclass(frozen=True)
class SliceRecord:
    """What the reader needs from one single-frame DICOM image file.

    ``position`` is ImagePositionPatient (LPS mm, centre of the first pixel), ``orientation`` the
    six direction cosines of ImageOrientationPatient, ``pixel_spacing`` DICOM PixelSpacing
    (row spacing = y, column spacing = x) in mm. ``series_key`` is the SeriesInstanceUID, or, when
    a file has none, a key built from folder, FrameOfReferenceUID, SeriesNumber, description,
    orientation and matrix.
    """

    path: Path
    series_key: str
    series_uid: str
    modality: str
    rows: int
    columns: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    transfer_syntax: str
    instance_number: int | None
    sop_instance_uid: str
    sop_class_uid: str
    series_number: int | None
    series_description: str
    slice_thickness: float | None
    study_uid: str
    frame_of_reference_uid: str
    rescale_slope: float | None
    rescale_intercept: float | None

    @property
    def normal(self) -> np.ndarray | None:
        """(3,) unit slice normal, row direction x column direction, or None without orientation."""
        if self.orientation is None:
            return None
        row = np.asarray(self.orientation[:3])
        col = np.asarray(self.orientation[3:])
        n = np.cross(row, col)
        norm = np.linalg.norm(n)
        return n / norm if norm > 0 else None


def plane_name(orientation: tuple[float, ...] | None) -> str:
    """ "axial", "coronal", "sagittal" or "unknown" from ImageOrientationPatient (largest normal component)."""
    if orientation is None:
        return "unknown"
    n = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    if not np.isfinite(n).all() or np.linalg.norm(n) == 0:
        return "unknown"
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(n)))]


def tilt_deg(orientation: tuple[float, ...] | None) -> float:
    """Angle between the slice normal and the patient z axis in degrees (0 for a plain axial slice)."""
    if orientation is None:
        return float("nan")
    n = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    norm = np.linalg.norm(n)
    if not np.isfinite(norm) or norm == 0:
        return float("nan")
    return float(np.degrees(np.arccos(min(1.0, abs(n[2]) / norm))))


def read_dataset(path: Path, *, pixels: bool) -> pydicom.Dataset | None:
    """The dataset of ``path``; None when the file is not DICOM at all.

    Raises:
        DicomInputError: the file cannot be read (permissions, a dangling link), or looks like DICOM
            (preamble or parseable) but is corrupted.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError:
        return None
    except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:
        raise DicomInputError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from exc
    except Exception as exc:  # noqa: BLE001 - any pydicom failure on a corrupted file becomes ours
        raise DicomInputError(path, f"corrupted DICOM file ({type(exc).__name__}: {exc})") from exc


def _floats(value: Any, n: int, keyword: str) -> tuple[float, ...]:
    values = tuple(
        float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value])
    )
    if len(values) != n or not all(np.isfinite(values)):
        raise ValueError(f"{keyword} must hold {n} finite numbers, got {value!r}")
    return values


def _optional_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def slice_record(path: Path, ds: pydicom.Dataset) -> SliceRecord | None:
    """A :class:`SliceRecord` for an image file; None for non-image DICOM (no Rows, e.g. SR, DICOMDIR).

    Raises:
        DicomInputError: an attribute is present but malformed (names the attribute), or the
            file is multi-frame or colour.
    """
    try:
        if "Rows" not in ds or "Columns" not in ds:
            file_meta = getattr(ds, "file_meta", None)
            sop_class = str(file_meta.get("MediaStorageSOPClassUID", "")) if file_meta is not None else ""
            if "Image Storage" in (UID(sop_class).name if sop_class else ""):
                raise ValueError(f"an image file ({UID(sop_class).name}) without Rows/Columns: truncated header")
            if len(ds) == 0:
                raise ValueError("no data elements after the DICOM preamble: truncated file")
            return None
        rows, columns = int(ds.Rows), int(ds.Columns)
        if not (0 < rows <= MAX_MATRIX and 0 < columns <= MAX_MATRIX):
            raise ValueError(f"Rows x Columns = {rows} x {columns} is outside 1..{MAX_MATRIX}")
        n_frames = _optional_int(ds.get("NumberOfFrames")) or 1
        if n_frames > 1:
            raise ValueError(f"multi-frame images ({n_frames} frames) are not supported; export single-frame slices")
        samples = _optional_int(ds.get("SamplesPerPixel")) or 1
        if samples != 1:
            raise ValueError(f"SamplesPerPixel = {samples}: colour images are not CT")
        position = (
            _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient") if ds.get("ImagePositionPatient") else None
        )
        orientation = (
            _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient")
            if ds.get("ImageOrientationPatient")
            else None
        )
        if orientation is not None and plane_name(orientation) == "unknown":
            raise ValueError(f"ImageOrientationPatient {orientation} has parallel or zero direction cosines")
        spacing = _floats(ds.PixelSpacing, 2, "PixelSpacing") if ds.get("PixelSpacing") else None
        if spacing is not None and min(spacing) <= 0:
            raise ValueError(f"PixelSpacing {spacing} must be positive")
        slope = float(ds.RescaleSlope) if ds.get("RescaleSlope") not in (None, "") else None
        intercept = float(ds.RescaleIntercept) if ds.get("RescaleIntercept") not in (None, "") else None
        if not all(v is None or np.isfinite(v) for v in (slope, intercept)) or slope == 0:
            raise ValueError(f"RescaleSlope {slope} / RescaleIntercept {intercept} are not usable")
        thickness = float(ds.SliceThickness) if ds.get("SliceThickness") not in (None, "") else None
        file_meta = getattr(ds, "file_meta", None)
        transfer_syntax = str(file_meta.get("TransferSyntaxUID", "")) if file_meta is not None else ""
        if transfer_syntax and not UID(transfer_syntax).is_transfer_syntax:
            raise ValueError(f"TransferSyntaxUID '{transfer_syntax}' is not a known transfer syntax")
        sop_class = _text(ds, "SOPClassUID")
        modality = _text(ds, "Modality").upper() or ("CT" if sop_class in CT_SOP_CLASSES else "")
        series_uid = _text(ds, "SeriesInstanceUID")
        series_number = _optional_int(ds.get("SeriesNumber"))
        description = _text(ds, "SeriesDescription")
        frame_of_reference = _text(ds, "FrameOfReferenceUID")
        if series_uid:
            key = series_uid
        else:
            rounded = None if orientation is None else tuple(round(v, 3) for v in orientation)
            key = f"no-uid:{path.parent}|{frame_of_reference}|{series_number}|{description}|{rounded}|{rows}x{columns}"
        return SliceRecord(
            path=path,
            series_key=key,
            series_uid=series_uid,
            modality=modality,
            rows=rows,
            columns=columns,
            position=position,  # type: ignore[arg-type]
            orientation=orientation,
            pixel_spacing=spacing,  # type: ignore[arg-type]
            transfer_syntax=transfer_syntax,
            instance_number=_optional_int(ds.get("InstanceNumber")),
            sop_instance_uid=_text(ds, "SOPInstanceUID"),
            sop_class_uid=sop_class,
            series_number=series_number,
            series_description=description,
            slice_thickness=thickness,
            study_uid=_text(ds, "StudyInstanceUID"),
            frame_of_reference_uid=frame_of_reference,
            rescale_slope=slope,
            rescale_intercept=intercept,
        )
    except DicomInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed values surface from pydicom's lazy conversion
        raise DicomInputError(path, f"malformed header ({type(exc).__name__}: {exc})") from exc


def copied_header(ds: pydicom.Dataset) -> dict[str, str]:
    """Patient, study and frame-of-reference attributes of ``ds`` as strings, for derived output."""
    header: dict[str, str] = {}
    for keyword in PATIENT_STUDY_KEYWORDS:
        try:
            value = ds.get(keyword)
        except Exception:  # noqa: BLE001 - an unreadable optional attribute is simply not copied
            continue
        if value is None:
            continue
        header[keyword] = (
            "\\".join(str(v) for v in value) if isinstance(value, pydicom.multival.MultiValue) else str(value)
        )
    return header
