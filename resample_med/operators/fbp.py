"""Filtered backprojection for parallel beam and flat-detector fan beam (Kak & Slaney 1988, ch. 3).

Parallel beam (eq. 3.60-3.62): ``f(x, y) = sum_v dtheta * q_v(x cos theta_v + y sin theta_v)`` with
``q_v`` the ramp-filtered projection (:mod:`resample_med.operators.filters`, spacing ``d``).

Fan beam with a flat detector, full 360-degree scan: the weighted FBP for equally spaced collinear
detectors (eq. 3.112-3.117). Detector coordinates are rescaled to the isocentre, ``s = u / M`` with
magnification ``M = source_to_detector / R``; each projection is pre-weighted by ``R / sqrt(R^2 + s^2)``,
convolved with half the ramp (each line is measured twice over 360 degrees) at spacing ``d / M``, and
backprojected with the distance weight ``1 / U^2``, ``U = L / R``, where ``L = R + p . e_r`` is the
distance from the source to point ``p`` along the central ray:

    f(p) = sum_v dbeta * (R / L_v(p))^2 * q_v(s_v(p)),     s_v(p) = R (p . e_u) / L_v(p).

Backprojection is pixel-driven with linear interpolation on the detector (as in ASTRA's FBP), not
the Joseph adjoint: a ray-driven adjoint sampled at bins wider than ``pixel / sqrt(2)`` gives
Moire artefacts in FBP. It is precomputed as a sparse ``(H * W, V * D)`` matrix.

``dtheta`` / ``dbeta`` is the angular coverage per view (:func:`angular_step`): ``pi / V`` (parallel)
or ``2 pi / V`` (fan) for evenly spaced full scans and the arc step for limited-angle arcs. Short fan
scans get no Parker weights: their FBP is approximate.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch

from resample_med.geometry import FanBeamGeometry, Geometry, ParallelBeamGeometry
from resample_med.operators.filters import filter_projections

VIEWS_PER_CHUNK = 16
"""Views processed per vectorised block when building the backprojection matrix."""

SAME_ANGLE_TOL_RAD = 1e-9
"""Folded view angles closer than this measure the same lines."""


def angular_step(geometry: Geometry) -> float:
    """Quadrature weight per view in radians: angular coverage divided by the number of views.

    Angles are folded into the scan range (180 degrees parallel, 360 fan). The coverage is the range
    minus the excess of the largest gap over the typical (median non-zero) gap, so an even full scan
    gives ``range / V``, an arc of ``a`` degrees ``a / V`` (the missing wedge is not filled), and a
    parallel scan over 360 degrees ``pi / V`` (each line measured twice).
    """
    period = geometry.scan_range_rad
    angles = np.sort(np.mod(np.asarray(geometry.angles, dtype=np.float64), period))
    gaps = np.diff(np.concatenate([angles, angles[:1] + period]))
    distinct = gaps[gaps > SAME_ANGLE_TOL_RAD]
    if distinct.size <= 1:
        return period / geometry.n_views
    missing = max(float(gaps.max() - np.median(distinct)), 0.0)
    return (period - missing) / geometry.n_views


def filter_sinogram(sinogram: torch.Tensor, geometry: Geometry, filter_name: str = "ramp") -> torch.Tensor:
    """Weight and filter a sinogram for :func:`build_fbp_backprojector`: ``(..., V, D) -> (..., V, D)``.

    Parallel: ramp filter at spacing ``d``. Fan: cosine pre-weight, half ramp at spacing ``d / M``
    (module docstring). Output units: sinogram units per mm.
    """
    if isinstance(geometry, ParallelBeamGeometry):
        return filter_projections(sinogram, geometry.det_spacing_mm, filter_name)
    if isinstance(geometry, FanBeamGeometry):
        radius = geometry.source_to_isocenter_mm
        s = torch.tensor(geometry.detector_positions_mm(), dtype=torch.float64) / geometry.magnification
        cosine = (radius / torch.sqrt(radius**2 + s**2)).to(device=sinogram.device, dtype=sinogram.dtype)
        return 0.5 * filter_projections(sinogram * cosine, geometry.isocenter_det_spacing_mm, filter_name)
    raise TypeError(f"unsupported geometry type {type(geometry).__name__}")


def _detector_index_and_weight(
    geometry: Geometry, x: torch.Tensor, y: torch.Tensor, angles: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fractional detector index ``(Vc, HW)`` hit by each pixel centre, and its backprojection weight."""
    cos, sin = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
    centre = (geometry.det_count - 1) / 2.0
    along_u = x[None] * cos + y[None] * sin  # p . e_u
    if isinstance(geometry, ParallelBeamGeometry):
        return along_u / geometry.det_spacing_mm + centre, torch.ones_like(along_u)
    radius = geometry.source_to_isocenter_mm
    distance = radius - x[None] * sin + y[None] * cos  # L = R + p . e_r
    u = geometry.source_to_detector_mm * along_u / distance
    return u / geometry.det_spacing_mm + centre, (radius / distance) ** 2


def build_fbp_backprojector(geometry: Geometry) -> scipy.sparse.csr_matrix:
    """Pixel-driven, weighted backprojection matrix ``B`` with ``fbp(y) = B filter_sinogram(y)``.

    Returns:
        scipy CSR ``(H * W, V * D)``, float32 values (angular and fan distance weights included).
    """
    n = geometry.image_size
    centre = (n - 1) / 2.0
    coords = (torch.arange(n, dtype=torch.float64) - centre) * geometry.pixel_spacing_mm
    y, x = torch.meshgrid(-coords, coords, indexing="ij")  # row i -> y_i (up), column j -> x_j
    x, y = x.reshape(-1), y.reshape(-1)
    pixel_ids = torch.arange(n * n, dtype=torch.int32)
    step = angular_step(geometry)
    rows, cols, vals = [], [], []
    for start in range(0, geometry.n_views, VIEWS_PER_CHUNK):
        views = torch.arange(start, min(start + VIEWS_PER_CHUNK, geometry.n_views))
        angles = torch.tensor(geometry.angles, dtype=torch.float64)[views]
        index, weight = _detector_index_and_weight(geometry, x, y, angles)
        lower = torch.floor(index)
        frac = index - lower
        lower = lower.to(torch.int64)
        bins = torch.stack([lower, lower + 1], dim=-1)  # (Vc, HW, 2)
        w = step * weight[..., None] * torch.stack([1.0 - frac, frac], dim=-1)
        valid = (bins >= 0) & (bins < geometry.det_count) & (w > 0)
        ray = views[:, None, None] * geometry.det_count + bins
        rows.append(pixel_ids[None, :, None].expand_as(bins)[valid])
        cols.append(ray[valid].to(torch.int32))
        vals.append(w[valid].to(torch.float32))
    # Entries were emitted view-major, so within each pixel's row the ray columns already increase.
    coo = scipy.sparse.coo_matrix(
        (torch.cat(vals).numpy(), (torch.cat(rows).numpy(), torch.cat(cols).numpy())),
        shape=(n * n, geometry.n_views * geometry.det_count),
    )
    return coo.tocsr()
