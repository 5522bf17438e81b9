"""Which HU arrays are accepted: finite, inside a plausible CT range, on a matrix large enough to reconstruct.

Inputs are checked once they are decoded (:func:`check_input_hu`): a NaN or infinite voxel is an
input error naming the file, the count and the first slice, unless the caller says which HU value
fills them; values no CT scale can hold (a voxel of 1e38 would force a rescale slope of about 1e34
on the whole derived series) and images too small for a projection simulation are refused with the
reason. Outputs are checked right before every write (:func:`require_finite`), so NaN or Inf is
never written, whatever produced it.
"""

from __future__ import annotations

import warnings
from os import PathLike

import numpy as np

from resample_med.io.errors import DicomInputError, DicomInputWarning, NonFiniteError

PLAUSIBLE_HU = (-10_000.0, 100_000.0)
"""Widest HU range accepted from an input: padding values (-3024, -2000), extended CT scales (about
+30 000 HU) and dense metal fit well inside; anything beyond is a corrupt or mis-scaled file."""

MIN_MATRIX = 4
"""Fewest pixels per side of an input slice: a smaller "image" is a corrupt header or the wrong file, not CT."""


def non_finite_summary(values: np.ndarray) -> tuple[int, int | None]:
    """(number of NaN/Inf entries, index along axis 0 of the first slice holding one, or None)."""
    bad = ~np.isfinite(values)
    count = int(bad.sum())
    if not count:
        return 0, None
    per_slice = bad.reshape(bad.shape[0], -1).any(axis=1) if bad.ndim > 1 else bad
    return count, int(np.argmax(per_slice))


def require_finite(values: np.ndarray, where: str | PathLike[str]) -> None:
    """Refuse to write ``values`` (``(Z, ...)`` or ``(H, W)``) that hold NaN or Inf.

    Raises:
        NonFiniteError: names ``where``, the count and the first slice.
    """
    count, first = non_finite_summary(np.asarray(values))
    if count:
        raise NonFiniteError(f"{where}: not written: {count} non-finite value(s) (NaN or Inf), first in slice {first}")


def check_input_hu(hu: np.ndarray, path: str | PathLike[str], fill_nonfinite: float | None = None) -> int:
    """Check a decoded input ``hu`` ``(Z, Y, X)``; fill its non-finite voxels in place when ``fill_nonfinite`` is given.

    Returns:
        The number of voxels filled.

    Args:
        hu: the decoded input (modified in place only when filling).
        path: the input file or folder, for messages.
        fill_nonfinite: HU value for NaN/Inf voxels (a :class:`DicomInputWarning` gives the count);
            ``None`` refuses them.

    Slice numbers in messages count along axis 0 of ``hu``: pass the array in the file's own order.

    Raises:
        DicomInputError: non-finite voxels without a fill value, values outside :data:`PLAUSIBLE_HU`,
            or slices smaller than :data:`MIN_MATRIX` pixels per side.
    """
    z, y, x = hu.shape
    if min(y, x) < MIN_MATRIX:
        raise DicomInputError(
            path,
            f"slices of {y} x {x} pixels are too small to reconstruct "
            f"(at least {MIN_MATRIX} x {MIN_MATRIX}); is this a CT volume?",
        )
    count, first = non_finite_summary(hu)
    if count:
        n_slices = int((~np.isfinite(hu)).reshape(z, -1).any(axis=1).sum())
        where = f"first in slice {first}, {n_slices} slice(s) affected"
        if fill_nonfinite is None:
            raise DicomInputError(
                path,
                f"holds {count} non-finite voxel(s) (NaN or Inf), {where}; fix the file, "
                "or choose the HU value that replaces them (--fill-nonfinite HU)",
            )
        warnings.warn(
            f"{path}: filled {count} non-finite voxel(s) ({where}) with {fill_nonfinite:g} HU",
            DicomInputWarning,
            stacklevel=3,
        )
        hu[~np.isfinite(hu)] = np.float32(fill_nonfinite)
    lo, hi = float(hu.min()), float(hu.max())
    if lo < PLAUSIBLE_HU[0] or hi > PLAUSIBLE_HU[1]:
        outside = (hu < PLAUSIBLE_HU[0]) | (hu > PLAUSIBLE_HU[1])
        first_slice = int(np.argmax(outside.reshape(z, -1).any(axis=1)))
        raise DicomInputError(
            path,
            f"values from {lo:.6g} to {hi:.6g} HU lie outside the plausible CT range "
            f"{PLAUSIBLE_HU[0]:g}..{PLAUSIBLE_HU[1]:g} HU ({int(outside.sum())} voxel(s), first in slice "
            f"{first_slice}): a corrupt or mis-scaled file (not in HU?)",
        )
    return count
