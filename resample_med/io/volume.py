"""The CT volume that every reader returns and every writer takes.

Geometry follows DICOM's patient coordinate system (LPS, millimetres). Voxel ``hu[k, j, i]`` (slice
``k``, row ``j``, column ``i``) has its centre at::

    p(k, j, i) = origin_mm + i * sx * direction[0] + j * sy * direction[1] + k * sz * direction[2]

where ``(sz, sy, sx) = spacing_mm``, ``direction[0]`` is the column direction (DICOM
ImageOrientationPatient[0:3], along increasing ``i``), ``direction[1]`` the row direction
(ImageOrientationPatient[3:6], along increasing ``j``) and ``direction[2]`` the slice normal
(along increasing ``k``). When the slices of a DICOM series are unevenly spaced, ``sz`` is the
median gap; with gantry tilt, successive slices step along the table axis rather than the normal.
In both cases the exact per-slice positions are kept in ``source["ImagePositionPatient"]``
(see :meth:`CTVolume.slice_positions`), and derived DICOM uses them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class CTVolume:
    """A CT volume in Hounsfield units with its patient-space geometry.

    Attributes:
        hu: (Z, Y, X) float32 Hounsfield units.
        spacing_mm: (z, y, x) voxel spacing in mm; z is the (median) slice gap.
        origin_mm: (3,) LPS position of the centre of voxel (0, 0, 0).
        direction: (3, 3) rows are the unit vectors of the x, y, z array axes in LPS.
        source: metadata of the input, used to write derived output: ``format`` ("dicom" or
            "nifti"), ``path``, ``files`` (one per slice for DICOM), ``StudyInstanceUID``,
            ``SeriesInstanceUID``, ``FrameOfReferenceUID``, ``SOPInstanceUIDs``,
            ``ImagePositionPatient`` (Z lists of 3 floats), ``ImageOrientationPatient``,
            ``PatientID``, ``SeriesDescription``, ``SeriesNumber``, ``Modality`` and
            ``header`` (patient/study/equipment attributes to copy into derived DICOM).
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_mm: np.ndarray
    direction: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"CTVolume.hu must be (Z, Y, X), got shape {self.hu.shape}")
        if np.asarray(self.origin_mm).shape != (3,) or np.asarray(self.direction).shape != (3, 3):
            raise ValueError("CTVolume.origin_mm must be (3,) and direction (3, 3)")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Z, Y, X)."""
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        """Number of axial slices Z."""
        return int(self.hu.shape[0])

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """In-plane spacing (y, x) in mm."""
        return (float(self.spacing_mm[1]), float(self.spacing_mm[2]))

    def affine_lps(self) -> np.ndarray:
        """(4, 4) matrix mapping homogeneous voxel indices (i, j, k, 1) = (x, y, z, 1) to LPS mm."""
        affine = np.eye(4)
        sz, sy, sx = self.spacing_mm
        affine[:3, 0] = np.asarray(self.direction[0]) * sx
        affine[:3, 1] = np.asarray(self.direction[1]) * sy
        affine[:3, 2] = np.asarray(self.direction[2]) * sz
        affine[:3, 3] = self.origin_mm
        return affine

    def slice_positions(self) -> np.ndarray:
        """(Z, 3) LPS position of the first voxel of each slice (DICOM ImagePositionPatient)."""
        recorded = self.source.get("ImagePositionPatient")
        if recorded is not None and len(recorded) == self.n_slices:
            return np.asarray(recorded, dtype=np.float64)
        k = np.arange(self.n_slices, dtype=np.float64)[:, None]
        return np.asarray(self.origin_mm)[None, :] + k * self.spacing_mm[0] * np.asarray(self.direction[2])[None, :]

    def with_hu(self, hu: np.ndarray, **source_updates: Any) -> CTVolume:
        """The same geometry and source with new (Z, Y, X) HU values (e.g. a reconstruction)."""
        hu = np.asarray(hu, dtype=np.float32)
        if hu.shape != self.hu.shape:
            raise ValueError(f"new HU array has shape {hu.shape}, the volume is {self.hu.shape}")
        return dataclasses.replace(self, hu=hu, source={**self.source, **source_updates})
