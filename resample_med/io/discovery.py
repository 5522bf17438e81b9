"""Finding the DICOM series in a folder and choosing one.

:func:`discover_series` scans a folder recursively, reads only headers, skips files that are not
DICOM (and the temporary folders of resample-med's own writers), records the DICOM files it cannot
read and groups the rest by SeriesInstanceUID into :class:`SeriesInfo` records.
:func:`select_series` picks one by UID or SeriesNumber, by description only when asked, or by
default the largest axial CT series, and refuses other modalities and non-axial planes.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.uid import UID

from resample_med.io.dicom_headers import SliceRecord, plane_name, read_dataset, slice_record, tilt_deg
from resample_med.io.errors import DicomInputError
from resample_med.io.output_paths import TEMPORARY_NAME

SUPPORTED_MODALITIES = frozenset({"CT"})
"""Modalities resample-med reconstructs."""

DICOM_NAME_SUFFIXES = (".dcm", ".dicom", ".ima")
"""A file named like this that does not parse is a bad DICOM file (e.g. cut inside its preamble), not a stranger."""


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
        bad_files: (file, problem) of every DICOM file of the scanned folder that could not be read
            (truncated, unreadable): it may belong to this series, whose reader refuses it by default.
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
    bad_files: tuple[tuple[Path, str], ...] = field(repr=False, compare=False, default=())

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
    """Every file under ``folder``, sorted, minus the temporary siblings of resample-med's writers."""
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not TEMPORARY_NAME.match(d))
        files.extend(Path(root) / name for name in sorted(names) if not TEMPORARY_NAME.match(name))
    return files


def _syntax_name(uid: str) -> str:
    if not uid:
        return "unknown"
    name = UID(uid).name
    return name or uid


def _series_info(folder: Path, records: list[SliceRecord], bad_files: tuple[tuple[Path, str], ...]) -> SeriesInfo:
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
        bad_files=bad_files,
    )


def discover_series(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """All image series under ``path`` (a folder scanned recursively, or one file).

    Files that are not DICOM are skipped silently; DICOM files without an image (SR, DICOMDIR)
    are skipped; DICOM files that cannot be read (corrupted, truncated even inside the preamble
    when named ``*.dcm``, unreadable) are listed in each series' ``bad_files``.

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
    bad: list[tuple[Path, str]] = []
    n_dicom = 0
    for file in files:
        try:
            ds = read_dataset(file, pixels=False)
            if ds is None:
                if file.suffix.lower() in DICOM_NAME_SUFFIXES:
                    raise DicomInputError(file, "is named as DICOM but is not a readable DICOM file (truncated?)")
                continue
            n_dicom += 1
            record = slice_record(file, ds)
        except DicomInputError as exc:
            if root.is_file():
                raise
            bad.append((file, exc.problem))
            continue
        if record is not None:
            groups[record.series_key].append(record)
    if not groups:
        what = "no DICOM files" if n_dicom == 0 else f"{n_dicom} DICOM file(s) but no readable image"
        if bad:
            what += f"; bad DICOM file(s): {describe_bad_files(bad)}"
        nifti = [f.name for f in files if f.name.lower().endswith((".nii", ".nii.gz"))]
        hint = f"; for NIfTI give the file itself, e.g. {nifti[0]}" if nifti else ""
        raise DicomInputError(root, f"holds {what} (scanned {len(files)} file(s)){hint}")
    folder = root if root.is_dir() else root.parent
    series = [_series_info(folder, records, tuple(bad)) for records in groups.values()]
    return sorted(series, key=lambda s: (s.number if s.number is not None else -1, s.description, s.uid))


def describe_bad_files(bad: list[tuple[Path, str]] | tuple[tuple[Path, str], ...]) -> str:
    """``name (problem); ...`` for messages."""
    return "; ".join(f"{Path(path).name} ({problem})" for path, problem in bad)


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


def default_series(series: list[SeriesInfo]) -> SeriesInfo | None:
    """The series chosen without a selector: the largest axial CT series (most slices, then largest
    matrix, then the lowest SeriesNumber), or None when there is none."""
    candidates = [s for s in series if s.modality in SUPPORTED_MODALITIES and s.orientation == "axial"]
    if not candidates:
        return None
    return max(candidates, key=lambda s: (s.n_slices, s.matrix[0] * s.matrix[1], -(s.number or 0)))


def select_series(
    series: list[SeriesInfo], selector: str | int | None = None, *, description: str | None = None
) -> SeriesInfo:
    """Choose one series from :func:`discover_series`'s list.

    Args:
        series: discovered series (non-empty).
        selector: a SeriesInstanceUID or a SeriesNumber (int or digit string); a number selects
            by number only, never by description. None (and no ``description``) for
            :func:`default_series`.
        description: a case-insensitive substring of SeriesDescription that matches exactly one series.

    Raises:
        DicomInputError: nothing matches, the match is ambiguous, both ways of choosing are given,
            or the chosen series is not axial CT (the message names the folder and lists what was found).
    """
    if not series:
        raise DicomInputError(".", "no series to choose from")
    folder = series[0].folder
    found = "; ".join(s.summary() for s in series)
    if selector is not None and description is not None:
        raise DicomInputError(
            folder, "choose the series by UID/number (--series) or by description (--series-description), not both"
        )
    if description is not None:
        matches = [s for s in series if description.strip().lower() in s.description.lower()]
        asked = f"SeriesDescription containing {description!r}"
        hint = "give a longer part of the description, or the SeriesNumber or UID (--series)"
    elif selector is not None:
        text = str(selector).strip()
        matches = [s for s in series if s.uid == text]
        if not matches and text.lstrip("-").isdigit():
            matches = [s for s in series if s.number == int(text)]
        asked = f"SeriesInstanceUID or SeriesNumber {text!r}"
        hint = "give the SeriesInstanceUID"
    else:
        chosen = default_series(series)
        if chosen is None:
            raise DicomInputError(folder, f"no axial CT series found; found: {found}")
        return chosen
    if not matches:
        by_description = "" if description is not None else "; to choose by description use --series-description"
        raise DicomInputError(folder, f"no series with {asked}; found: {found}{by_description}")
    if len(matches) > 1:
        listed = "; ".join(s.summary() for s in matches)
        raise DicomInputError(folder, f"{asked} matches {len(matches)} series, {hint}: {listed}")
    return _check_usable(matches[0])
