"""Joseph's system matrix for parallel and flat-detector fan beam, built vectorised in torch.

Joseph (1982), "An improved algorithm for reprojecting rays through pixel images", IEEE TMI 1(3):
192-196. A ray with unit direction ``(e_x, e_y)`` is *x-major* when ``|e_x| >= |e_y|``; it is then
sampled once per pixel column ``j`` at ``x_j``, where it crosses the column's centre line at the
fractional row ``r_j``, and the line integral is approximated by

    p = (s / |e_x|) * sum_j [ (1 - f_j) f(floor(r_j), j) + f_j f(floor(r_j) + 1, j) ],   f_j = r_j - floor(r_j)

(Joseph's eq. 6 with linear interpolation between the two nearest pixel rows; pixels outside the image
count as zero). A y-major ray is sampled once per row with the roles of rows and columns swapped. Each
ray therefore contributes at most ``2 * image_size`` non-zeros. The weights are the exact entries of a
sparse matrix ``A`` (rays x pixels), so ``A^T`` is the exact adjoint.

Rays are ordered view-major: row ``v * D + k`` is view ``v``, detector bin ``k``; columns are pixels
``i * W + j`` of the ``(H, W)`` image (conventions in :mod:`resample_med.geometry`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch

from resample_med.geometry import FanBeamGeometry, Geometry, ParallelBeamGeometry

RAYS_PER_CHUNK = 4096
"""Rays processed per vectorised block; bounds the build's temporary memory to ~100 MB at 512^2."""

BUILD_DTYPE = torch.float32
"""Arithmetic of the build. Origins are the rays' points closest to the isocentre, so every coordinate is
within the image's scale and float32 places samples to ~1e-5 pixel; weights are stored in float32 anyway."""


def ray_origins_and_directions(geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ray of ``geometry`` as its point closest to the isocentre and its unit direction, in mm.

    Returns:
        origins ``(V * D, 2)`` and directions ``(V * D, 2)``, float64, ``(x, y)`` columns, view-major.
    """
    angles = torch.tensor(geometry.angles, dtype=torch.float64)
    u = torch.tensor(geometry.detector_positions_mm(), dtype=torch.float64)
    cos, sin = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
    n_rays = geometry.n_views * geometry.det_count
    if isinstance(geometry, ParallelBeamGeometry):
        origins = torch.stack([u * cos, u * sin], dim=-1)
        directions = torch.stack([-sin, cos], dim=-1).expand(-1, geometry.det_count, -1)
        return origins.reshape(n_rays, 2), directions.reshape(n_rays, 2)
    if isinstance(geometry, FanBeamGeometry):
        r_iso, r_det = geometry.source_to_isocenter_mm, geometry.source_to_detector_mm
        source = torch.cat([r_iso * sin, -r_iso * cos], dim=-1)[:, None, :]  # (V, 1, 2): -R e_r
        along = r_det - r_iso  # detector centre lies at +(r_det - r_iso) e_r
        bins = torch.stack([along * -sin + u * cos, along * cos + u * sin], dim=-1)  # (V, D, 2)
        directions = bins - source
        directions = directions / torch.linalg.vector_norm(directions, dim=-1, keepdim=True)
        closest = source - (source * directions).sum(dim=-1, keepdim=True) * directions
        return closest.reshape(n_rays, 2), directions.reshape(n_rays, 2)
    raise TypeError(f"unsupported geometry type {type(geometry).__name__}")


def _joseph_block(
    origins: torch.Tensor, directions: torch.Tensor, image_size: int, spacing: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Joseph weights for a block of R rays.

    Args:
        origins, directions: ``(R, 2)`` in mm, dtype ``BUILD_DTYPE``.
    Returns:
        counts ``(R,)`` non-zeros per ray, pixel columns ``(nnz,)`` int32 and weights ``(nnz,)`` float32,
        ray-major (all entries of ray 0, then ray 1, ...).
    """
    n = image_size
    centre = (n - 1) / 2.0
    dx, dy = directions[:, 0:1], directions[:, 1:2]
    x_major = dx.abs() >= dy.abs()  # (R, 1)
    # Sample positions along the primary axis: column centres x_j (x-major) or row centres y_i (y-major).
    steps = torch.arange(n, dtype=origins.dtype)
    primary = torch.where(x_major, (steps - centre) * spacing, (centre - steps) * spacing)  # (R, n)
    d_primary = torch.where(x_major, dx, dy)
    d_secondary = torch.where(x_major, dy, dx)
    o_primary = torch.where(x_major, origins[:, 0:1], origins[:, 1:2])
    o_secondary = torch.where(x_major, origins[:, 1:2], origins[:, 0:1])
    secondary = o_secondary + (primary - o_primary) / d_primary * d_secondary  # y (x-major) or x (y-major)
    # Fractional index along the secondary axis: row r = c - y/s, or column c' = x/s + c.
    frac_index = torch.where(x_major, centre - secondary / spacing, secondary / spacing + centre)
    lower = torch.floor(frac_index)
    frac = frac_index - lower
    lower = lower.to(torch.int32)
    step_weight = spacing / d_primary.abs()  # (R, 1)
    weights = torch.stack([step_weight * (1.0 - frac), step_weight * frac], dim=-1)  # (R, n, 2)
    second_index = torch.stack([lower, lower + 1], dim=-1)
    first_index = steps.to(torch.int32)[None, :, None].expand_as(second_index)
    row = torch.where(x_major[..., None], second_index, first_index)
    col = torch.where(x_major[..., None], first_index, second_index)
    valid = (second_index >= 0) & (second_index < n) & (weights > 0)
    valid = valid.reshape(valid.shape[0], -1)
    pixels = (row * n + col).reshape(valid.shape)
    return valid.sum(dim=1), pixels[valid], weights.reshape(valid.shape)[valid].to(torch.float32)


def build_system_matrix(geometry: Geometry) -> scipy.sparse.csr_matrix:
    """Joseph's system matrix of ``geometry`` (see module docstring).

    Returns:
        ``A`` as a scipy CSR matrix of shape ``(V * D, H * W)``, float32 values, int32 indices.
    """
    origins, directions = (t.to(BUILD_DTYPE) for t in ray_origins_and_directions(geometry))
    n_rays = origins.shape[0]
    counts, cols, vals = [], [], []
    for start in range(0, n_rays, RAYS_PER_CHUNK):
        block = slice(start, start + RAYS_PER_CHUNK)
        c, p, w = _joseph_block(origins[block], directions[block], geometry.image_size, geometry.pixel_spacing_mm)
        counts.append(c)
        cols.append(p)
        vals.append(w)
    indptr = np.zeros(n_rays + 1, dtype=np.int64)
    np.cumsum(torch.cat(counts).numpy(), out=indptr[1:])
    if indptr[-1] >= np.iinfo(np.int32).max:
        raise ValueError(f"{indptr[-1]} non-zeros exceed int32 indexing; use fewer views or a smaller image")
    n_pixels = geometry.image_size**2
    return scipy.sparse.csr_matrix(
        (torch.cat(vals).numpy(), torch.cat(cols).numpy(), indptr.astype(np.int32)),
        shape=(n_rays, n_pixels),
    )
