"""Ordering the slices of one series along the slice normal and checking its geometry.

Slices are sorted by ImagePositionPatient projected on the slice normal
``n = row x col`` (the cross product of the two ImageOrientationPatient direction cosines),
never by InstanceNumber, which scanners and anonymisers scramble or drop. Duplicate positions,
missing slices and uneven gaps are reported as warnings that name the positions.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resample_med.io.dicom_headers import ORIENTATION_TOLERANCE, SliceRecord
from resample_med.io.errors import DicomInputError, DicomInputWarning

DUPLICATE_TOLERANCE_MM = 0.01
"""Two slices closer than this along the normal share a position."""

GAP_RELATIVE_TOLERANCE = 0.05
"""A gap differing from the median gap by more than this fraction is reported as uneven."""

MISSING_SLICE_FACTOR = 1.5
"""A gap larger than this multiple of the median gap is reported as missing slices."""

DEFAULT_SLICE_SPACING_MM = 1.0
"""Slice spacing assumed for a single slice without SliceThickness."""

STANDARD_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
"""ImageOrientationPatient of a plain axial slice: columns run to patient left, rows to posterior."""


@dataclass(frozen=True)
class SortedSeries:
    """The slices of one series in order along the normal, with the volume geometry.

    Attributes:
        folder: the scanned folder (for messages).
        records: Z slice records sorted by position along ``direction[2]``.
        positions: (Z, 3) ImagePositionPatient of each slice *after* the in-plane flips.
        direction: (3, 3) rows: column direction (x), row direction (y), slice normal (z), LPS.
        spacing_mm: (z, y, x); z is the median gap between slices.
        flip_x, flip_y: whether columns / rows are reversed so that x runs to patient left and y
            to posterior (the display convention of a plain axial slice).
        rescale: (Z, 2) RescaleSlope and RescaleIntercept per slice.
        dropped: (file, problem) of the series' files left out because their matrix or orientation
            differs from the majority (the reader refuses them unless told to skip bad slices).
    """

    folder: Path
    records: tuple[SliceRecord, ...]
    positions: np.ndarray
    direction: np.ndarray
    spacing_mm: tuple[float, float, float]
    flip_x: bool
    flip_y: bool
    rescale: np.ndarray
    dropped: tuple[tuple[Path, str], ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Z, Y, X)."""
        return (len(self.records), self.records[0].rows, self.records[0].columns)

    @property
    def orientation(self) -> tuple[float, ...]:
        """ImageOrientationPatient of the (flipped) slices: direction[0] then direction[1]."""
        return tuple(float(v) for v in np.concatenate([self.direction[0], self.direction[1]]))


def _warn(folder: Path, message: str) -> None:
    warnings.warn(f"{folder}: {message}", DicomInputWarning, stacklevel=3)


def _majority(records: list[SliceRecord]) -> tuple[list[SliceRecord], list[tuple[Path, str]]]:
    """(the slices that share the most common matrix and orientation, (file, problem) of the others)."""

    def signature(r: SliceRecord) -> tuple:
        ori = None if r.orientation is None else tuple(np.round(np.asarray(r.orientation) / ORIENTATION_TOLERANCE))
        return (r.rows, r.columns, ori)

    counts = Counter(signature(r) for r in records)
    if len(counts) == 1:
        return records, []
    keep = counts.most_common(1)[0][0]
    first = next(r for r in records if signature(r) == keep)
    dropped = [
        (r.path, f"matrix {r.rows}x{r.columns} or orientation differs from the series' {first.rows}x{first.columns}")
        for r in records
        if signature(r) != keep
    ]
    return [r for r in records if signature(r) == keep], dropped


def sort_slices(folder: Path, records: list[SliceRecord]) -> SortedSeries:
    """Sort ``records`` (one series) along the slice normal and derive the volume geometry.

    Raises:
        DicomInputError: slices lack ImagePositionPatient / ImageOrientationPatient (several
            slices cannot be ordered without them) or PixelSpacing.
    """
    if not records:
        raise DicomInputError(folder, "the series has no slices")
    records, dropped = _majority(list(records))
    no_spacing = [r.path.name for r in records if r.pixel_spacing is None]
    if no_spacing:
        raise DicomInputError(
            folder, f"PixelSpacing is missing in {', '.join(no_spacing[:5])}: attenuation needs physical pixel sizes"
        )
    unplaced = [r.path.name for r in records if r.position is None or r.orientation is None]
    if unplaced and len(records) > 1:
        raise DicomInputError(
            folder,
            f"ImagePositionPatient/ImageOrientationPatient missing in {', '.join(unplaced[:5])}: "
            "slices are ordered by position, never by InstanceNumber alone",
        )
    first = records[0]
    if unplaced:
        _warn(
            folder,
            f"{first.path.name} has no ImagePositionPatient/ImageOrientationPatient; "
            "assuming a plain axial slice at the origin",
        )
        orientation = np.asarray(STANDARD_ORIENTATION)
        positions = np.zeros((1, 3))
    else:
        orientation = np.asarray(first.orientation, dtype=np.float64)
        positions = np.asarray([r.position for r in records], dtype=np.float64)
    row_dir = orientation[:3] / np.linalg.norm(orientation[:3])
    col_dir = orientation[3:] / np.linalg.norm(orientation[3:])
    dy, dx = first.pixel_spacing  # type: ignore[misc]

    # Flip in-plane axes so x runs to patient left and y to posterior, as in a plain axial slice.
    flip_x = bool(row_dir[int(np.argmax(np.abs(row_dir)))] < 0)
    flip_y = bool(col_dir[int(np.argmax(np.abs(col_dir)))] < 0)
    if flip_x:
        positions = positions + (first.columns - 1) * dx * row_dir
        row_dir = -row_dir
    if flip_y:
        positions = positions + (first.rows - 1) * dy * col_dir
        col_dir = -col_dir
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)

    along = positions @ normal
    order = np.lexsort((np.array([r.instance_number or 0 for r in records]), along))
    records = [records[i] for i in order]
    positions, along = positions[order], along[order]

    duplicate = np.flatnonzero(np.diff(along) < DUPLICATE_TOLERANCE_MM) + 1
    if duplicate.size:
        names = ", ".join(
            f"{records[i].path.name} (at {along[i]:.2f} mm, same as {records[i - 1].path.name})" for i in duplicate
        )
        _warn(
            folder,
            f"dropped {duplicate.size} slice(s) at duplicate positions along the normal, kept the first: {names}",
        )
        keep = np.setdiff1d(np.arange(len(records)), duplicate)
        records = [records[i] for i in keep]
        positions, along = positions[keep], along[keep]

    if len(records) > 1:
        gaps = np.diff(along)
        dz = float(np.median(gaps))
        missing = np.flatnonzero(gaps > MISSING_SLICE_FACTOR * dz)
        uneven = np.flatnonzero(np.abs(gaps - dz) > GAP_RELATIVE_TOLERANCE * dz)
        uneven = np.setdiff1d(uneven, missing)
        if missing.size:
            spans = ", ".join(f"{along[i]:.2f}..{along[i + 1]:.2f} mm" for i in missing)
            _warn(
                folder,
                f"missing slices (gap > {MISSING_SLICE_FACTOR:g} x median {dz:.3g} mm) between positions {spans}",
            )
        if uneven.size:
            spans = ", ".join(f"{along[i]:.2f}..{along[i + 1]:.2f} mm ({gaps[i]:.3g})" for i in uneven)
            _warn(folder, f"uneven slice spacing (median {dz:.3g} mm) between positions {spans}")
    else:
        dz = float(first.slice_thickness or DEFAULT_SLICE_SPACING_MM)

    no_rescale = [r.path.name for r in records if r.rescale_slope is None or r.rescale_intercept is None]
    if no_rescale:
        _warn(
            folder,
            f"RescaleSlope/RescaleIntercept missing in {len(no_rescale)} slice(s) ({no_rescale[0]}, ...); "
            "assuming 1 and 0",
        )
    rescale = np.asarray(
        [
            (
                1.0 if r.rescale_slope is None else r.rescale_slope,
                0.0 if r.rescale_intercept is None else r.rescale_intercept,
            )
            for r in records
        ]
    )
    return SortedSeries(
        folder=folder,
        records=tuple(records),
        positions=positions,
        direction=np.stack([row_dir, col_dir, normal]),
        spacing_mm=(dz, float(dy), float(dx)),
        flip_x=flip_x,
        flip_y=flip_y,
        rescale=rescale,
        dropped=tuple(dropped),
    )
