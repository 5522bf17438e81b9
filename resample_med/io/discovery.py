"""Finding the DICOM series in a folder and choosing one.

:func:`discover_series` scans a folder recursively, reads only headers, skips files that are not
DICOM, warns about corrupted ones and groups the rest by SeriesInstanceUID into
:class:`SeriesInfo` records. :func:`select_series` picks one by UID, SeriesNumber or description,
or by default the largest axial CT series, and refuses other modalities and non-axial planes.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.uid import UID

from resample_med.io.dicom_headers import SliceRecord, plane_name, read_dataset, slice_record, tilt_deg
from resample_med.io.errors import DicomInputError, DicomInputWarning

SUPPORTED_MODALITIES = frozenset({"CT"})
"""Modalities resample-med reconstructs."""


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found by :func:`discover_series`.

    Attributes:
        uid: SeriesInstanceUID, or a key built from folder and geometry when the files have none.
        modality: DICOM Modality ("CT", "MR", ...); "" when absent.
        n_slices: number of image files.
        matrix: (rows, columns) of the first file.
        pixel_spacing_mm: (y, x) PixelSpacing, or None when absent.
        slice_spacing_mm: median gap between slice positions along the normal (None for 1 slice).
        orientation: "axial", "coronal", "sagittal" or "unknown" (largest normal component).
        tilt_deg: angle between the slice normal and the patient z axis (gantry tilt).
        transfer_syntax: name of the transfer syntax of the first file.
        description: SeriesDescription.
        number: SeriesNumber, or None.
        folder: the folder that was scanned.
        records: the per-file header records (internal to the reader).
    """

    uid: str
    modality: str
    n_slices: int
    matrix: tuple[int, int]
    pixel_spacing_mm: tuple[float, float] | None
    slice_spacing_mm: float | None
    orientation: str
    tilt_deg: float
    transfer_syntax: str
    description: str
    number: int | None
    folder: Path
    records: tuple[SliceRecord, ...] = field(repr=False, compare=False, default=())

    @property
    def files(self) -> tuple[Path, ...]:
        """The image files of the series, in scan order."""
        return tuple(r.path for r in self.records)

    def summary(self) -> str:
        """One line for logs and the GUI: number, description, modality, size, spacing, syntax."""
        spacing = (
            "?" if self.pixel_spacing_mm is None else f"{self.pixel_spacing_mm[1]:.3g}x{self.pixel_spacing_mm[0]:.3g}"
        )
        gap = "" if self.slice_spacing_mm is None else f"x{self.slice_spacing_mm:.3g}"
        return (
            f"#{self.number if self.number is not None else '-'} '{self.description}' {self.modality or '?'} "
            f"{self.orientation}: {self.n_slices} x {self.matrix[0]}x{self.matrix[1]}, "
            f"{spacing}{gap} mm, {self.transfer_syntax} [{self.uid}]"
        )


def _iter_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files.extend(Path(root) / name for name in sorted(names))
    return files


def _syntax_name(uid: str) -> str:
    if not uid:
        return "unknown"
    name = UID(uid).name
    return name or uid


def _series_info(folder: Path, records: list[SliceRecord]) -> SeriesInfo:
    first = records[0]
    slice_spacing = None
    normal = first.normal
    positions = [r.position for r in records if r.position is not None]
    if normal is not None and len(positions) > 1:
        along = np.unique(np.round(np.asarray(positions) @ normal, 4))
        if along.size > 1:
            slice_spacing = float(np.median(np.diff(along)))
    return SeriesInfo(
        uid=first.series_uid or first.series_key,
        modality=first.modality,
        n_slices=len(records),
        matrix=(first.rows, first.columns),
        pixel_spacing_mm=first.pixel_spacing,
        slice_spacing_mm=slice_spacing,
        orientation=plane_name(first.orientation),
        tilt_deg=tilt_deg(first.orientation),
        transfer_syntax=_syntax_name(first.transfer_syntax),
        description=first.series_description,
        number=first.series_number,
        folder=folder,
        records=tuple(records),
    )


def discover_series(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """All image series under ``path`` (a folder scanned recursively, or one file).

    Files that are not DICOM are skipped silently; DICOM files without an image (SR, DICOMDIR)
    are skipped; corrupted DICOM files are skipped with one :class:`DicomInputWarning` listing them.

    Returns:
        Series sorted by (SeriesNumber, description, uid).

    Raises:
        DicomInputError: the path does not exist, the folder is empty, or holds no DICOM images.
    """
    root = Path(path)
    if not root.exists():
        raise DicomInputError(root, "does not exist")
    files = [root] if root.is_file() else _iter_files(root)
    if not files:
        raise DicomInputError(root, "the folder is empty (no files in it or its subfolders)")
    groups: dict[str, list[SliceRecord]] = defaultdict(list)
    corrupted: list[str] = []
    n_dicom = 0
    for file in files:
        try:
            ds = read_dataset(file, pixels=False)
            if ds is None:
                continue
            n_dicom += 1
            record = slice_record(file, ds)
        except DicomInputError as exc:
            if root.is_file():
                raise
            corrupted.append(f"{file.name} ({exc.problem})")
            continue
        if record is not None:
            groups[record.series_key].append(record)
    if corrupted:
        warnings.warn(
            f"{root}: skipped {len(corrupted)} corrupted DICOM file(s): " + "; ".join(corrupted),
            DicomInputWarning,
            stacklevel=2,
        )
    if not groups:
        what = "no DICOM files" if n_dicom == 0 else f"{n_dicom} DICOM file(s) but no readable image"
        nifti = [f.name for f in files if f.name.lower().endswith((".nii", ".nii.gz"))]
        hint = f"; for NIfTI give the file itself, e.g. {nifti[0]}" if nifti else ""
        raise DicomInputError(root, f"holds {what} (scanned {len(files)} file(s)){hint}")
    folder = root if root.is_dir() else root.parent
    series = [_series_info(folder, records) for records in groups.values()]
    return sorted(series, key=lambda s: (s.number if s.number is not None else -1, s.description, s.uid))


def _check_usable(series: SeriesInfo) -> SeriesInfo:
    if series.modality not in SUPPORTED_MODALITIES:
        raise DicomInputError(
            series.folder,
            f"series {series.summary()} has modality '{series.modality or 'missing'}'; "
            f"resample-med reconstructs only {', '.join(sorted(SUPPORTED_MODALITIES))} images",
        )
    if series.orientation != "axial":
        raise DicomInputError(
            series.folder,
            f"series {series.summary()} is {series.orientation}, not axial: sparse-view CT is simulated and "
            "reconstructed in the acquisition (axial) plane; reformat the series to axial slices first",
        )
    return series


def select_series(series: list[SeriesInfo], selector: str | int | None = None) -> SeriesInfo:
    """Choose one series from :func:`discover_series`'s list.

    Args:
        series: discovered series (non-empty).
        selector: None for the largest axial CT series (most slices, then largest matrix, then
            the lowest SeriesNumber);
            a SeriesInstanceUID; a SeriesNumber (int or digit string); or a case-insensitive
            substring of SeriesDescription that matches exactly one series.

    Raises:
        DicomInputError: nothing matches, the match is ambiguous, or the chosen series is not
            axial CT (the message names the folder and lists what was found).
    """
    if not series:
        raise DicomInputError(".", "no series to choose from")
    folder = series[0].folder
    found = "; ".join(s.summary() for s in series)
    if selector is None:
        candidates = [s for s in series if s.modality in SUPPORTED_MODALITIES and s.orientation == "axial"]
        if not candidates:
            raise DicomInputError(folder, f"no axial CT series found; found: {found}")
        return max(candidates, key=lambda s: (s.n_slices, s.matrix[0] * s.matrix[1], -(s.number or 0)))
    text = str(selector).strip()
    matches = [s for s in series if s.uid == text]
    if not matches and text.lstrip("-").isdigit():
        matches = [s for s in series if s.number == int(text)]
    if not matches and isinstance(selector, str):
        matches = [s for s in series if text.lower() in s.description.lower()]
    if not matches:
        raise DicomInputError(folder, f"no series matches {selector!r} (UID, number or description); found: {found}")
    if len(matches) > 1:
        listed = "; ".join(s.summary() for s in matches)
        raise DicomInputError(folder, f"{selector!r} matches {len(matches)} series, give a UID: {listed}")
    return _check_usable(matches[0])
