"""NIfTI in and out through SimpleITK.

SimpleITK is the better NIfTI reader here: it resolves qform/sform into origin, spacing and a
direction matrix already in DICOM's LPS convention (nibabel gives a RAS affine that must be
flipped by hand), so DICOM- and NIfTI-derived :class:`CTVolume` objects share one geometry
convention. Axial volumes are flipped in-plane to the display convention of a plain axial slice
(x to patient left, y to posterior), exactly as DICOM series are.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from resample_med.io.dicom_headers import AXIAL_MAX_TILT_DEG
from resample_med.io.errors import DicomInputError, DicomInputWarning, OutputPathError
from resample_med.io.hu_checks import check_input_hu, require_finite
from resample_med.io.output_paths import atomic_file, check_output_path, input_paths
from resample_med.io.volume import CTVolume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
"""File name endings read as NIfTI."""

POSITION_TOLERANCE_MM = 0.01
"""Largest difference between recorded and affine-predicted slice positions before warning."""


def is_nifti(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a NIfTI file by its suffix."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_nifti(path: str | os.PathLike[str], fill_nonfinite: float | None = None) -> CTVolume:
    """Read a 3D NIfTI CT volume in HU.

    Args:
        path: the ``.nii`` / ``.nii.gz`` file.
        fill_nonfinite: HU value that replaces NaN/Inf voxels (recorded in ``source["nonfinite_filled"]``);
            ``None`` refuses a volume holding any (:func:`~resample_med.io.hu_checks.check_input_hu`).

    Returns:
        CTVolume with (Z, Y, X) float32 HU, LPS geometry.

    Raises:
        DicomInputError: missing or unreadable file, not 3D, not axial, non-finite or implausible values,
            or slices too small.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise DicomInputError(path, "does not exist")
    image = sitk.ImageFileReader()
    image.SetFileName(str(path))
    try:
        image.ReadImageInformation()
    except RuntimeError as exc:
        raise DicomInputError(path, f"unreadable NIfTI ({str(exc).strip().splitlines()[-1]})") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponents() != 1:
        raise DicomInputError(
            path,
            f"expected a 3D scalar volume, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponents()} component(s)",
        )
    hu = _voxels(path, tuple(image.GetSize()))  # (Z, Y, X), slices in the file's order
    filled = check_input_hu(hu, path, fill_nonfinite)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3).T  # rows = axis directions
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)  # (x, y, z)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    if (
        int(np.argmax(np.abs(direction[2]))) != 2
        or np.degrees(np.arccos(min(1.0, abs(direction[2, 2])))) > AXIAL_MAX_TILT_DEG
    ):
        raise DicomInputError(
            path,
            "the third array axis is not the patient z axis: only axial volumes are supported; reorient to axial first",
        )
    for axis in (0, 1):  # flip x / y so they run to patient left / posterior
        if direction[axis, int(np.argmax(np.abs(direction[axis])))] < 0:
            origin = origin + (hu.shape[2 - axis] - 1) * spacing[axis] * direction[axis]
            direction[axis] = -direction[axis]
            hu = np.flip(hu, axis=2 - axis)
    if direction[2, 2] < 0:  # slices ascending along +z, like DICOM series sorted by position
        origin = origin + (hu.shape[0] - 1) * spacing[2] * direction[2]
        direction[2] = -direction[2]
        hu = hu[::-1]
    if np.cross(direction[0], direction[1]) @ direction[2] < 0:
        warnings.warn(
            f"{path}: left-handed axes; slice normal differs from row x column", DicomInputWarning, stacklevel=2
        )
    return CTVolume(
        hu=np.ascontiguousarray(hu),
        spacing_mm=(float(spacing[2]), float(spacing[1]), float(spacing[0])),
        origin_mm=origin,
        direction=direction,
        source={
            "format": "nifti",
            "path": str(path.resolve()),
            "files": [str(path.resolve())],
            **({"nonfinite_filled": {"count": filled, "value_hu": fill_nonfinite}} if filled else {}),
        },
    )


def _voxels(path: Path, size_xyz: tuple[int, ...]) -> np.ndarray:
    """(Z, Y, X) float32 voxel values (scaled by scl_slope/scl_inter) read with nibabel.

    SimpleITK (ITK < 6) silently replaces NaN and Inf voxels of a NIfTI file with 0 (ITK pull request
    6683), which would turn a damaged volume into plausible water; nibabel keeps them, so they can be
    refused. SimpleITK still gives the geometry (LPS direction, origin, spacing).
    """
    import nibabel

    try:
        data = nibabel.load(str(path)).get_fdata(dtype=np.float32)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - nibabel's errors for damaged files vary; reported as ours
        raise DicomInputError(path, f"unreadable NIfTI voxel data ({type(exc).__name__}: {exc})") from exc
    if data.shape != size_xyz:
        raise DicomInputError(path, f"voxel data of shape {data.shape} do not match the header size {size_xyz}")
    return np.ascontiguousarray(data.transpose(2, 1, 0))


def write_nifti(
    volume: CTVolume, path: str | os.PathLike[str], hu: np.ndarray | None = None, *, overwrite: bool = False
) -> Path:
    """Write ``hu`` (default ``volume.hu``), (Z, Y, X) HU, as float32 NIfTI with the volume's affine.

    Per-slice positions of an unevenly spaced or gantry-tilted DICOM series cannot be stored in
    one affine: the uniform grid ``origin + k * sz * normal`` is written with a warning.

    Raises:
        OutputPathError: ``path`` is inside an input folder, is the input, or exists without ``overwrite``.
        NonFiniteError: ``hu`` holds NaN or Inf (nothing is written).
    """
    import SimpleITK as sitk

    target = Path(path)
    if not is_nifti(target):
        raise OutputPathError(target, f"NIfTI output needs a name ending in {' or '.join(NIFTI_SUFFIXES)}")
    target = check_output_path(target, input_paths(volume), overwrite=overwrite)
    data = volume.hu if hu is None else np.asarray(hu, dtype=np.float32)
    if data.shape != volume.hu.shape:
        raise ValueError(f"HU array {data.shape} does not match the volume {volume.hu.shape}")
    require_finite(data, target)
    k = np.arange(volume.n_slices)[:, None]
    uniform = volume.origin_mm[None, :] + k * volume.spacing_mm[0] * volume.direction[2][None, :]
    deviation = float(np.abs(volume.slice_positions() - uniform).max())
    if deviation > POSITION_TOLERANCE_MM:
        warnings.warn(
            f"{target}: slice positions deviate up to {deviation:.3g} mm from a uniform grid; "
            "NIfTI stores the uniform grid",
            DicomInputWarning,
            stacklevel=2,
        )
    image = sitk.GetImageFromArray(np.ascontiguousarray(data, dtype=np.float32))
    image.SetSpacing((volume.spacing_mm[2], volume.spacing_mm[1], volume.spacing_mm[0]))
    image.SetOrigin(tuple(float(v) for v in volume.origin_mm))
    image.SetDirection(tuple(float(v) for v in np.asarray(volume.direction).T.ravel()))
    with atomic_file(target) as temporary:
        sitk.WriteImage(image, str(temporary))
    return target
