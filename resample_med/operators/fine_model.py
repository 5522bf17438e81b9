"""A forward model finer than the reconstruction's, for simulating data without the inverse crime.

Simulating measurements with the very projector that reconstructs them (the "inverse crime",
Kaipio & Somersalo 2005, Sec. 1.2) hides every modelling error: the object is then exactly a
``H x W`` pixel image with Joseph's interpolation between pixel centres. Real scanners see a
continuous object, and each detector bin integrates photons over its width. This model
approximates that, independently of the reconstruction grid, for the *same physical geometry*
(angles, detector, distances):

1. the attenuation image ``(N, H, W)`` is upsampled ``upsample`` times by bicubic interpolation
   (``align_corners=False``: the fine pixels tile the coarse ones exactly) and clipped at 0
   (bicubic overshoot must not create negative attenuation);
2. it is projected by Joseph's method on the fine grid (pixel side ``s / upsample``) with every
   detector bin split into ``detector_subsamples`` sub-bins (side ``d / detector_subsamples``,
   centred on the bin: their mean position is the bin centre);
3. each bin records the mean *intensity* of its sub-rays, so the effective line integral is
   ``p = -log(mean_k exp(-p_k))`` (the detector averages photons, not line integrals: this keeps
   the exponential edge-gradient effect that a linear model does not have).

Poisson counts are then drawn on ``I0 exp(-p)`` by :func:`resample_med.operators.noise.simulate_post_log`,
i.e. on the fine model's expected counts. The result is shaped like the coarse geometry's
sinogram ``(N, V, D)``; only its values differ from the matched projection, by the discretisation
error of the coarse model.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch.nn import functional as F

from resample_med.geometry import Geometry
from resample_med.operators.joseph import build_system_matrix
from resample_med.operators.sparse import csr_from_scipy

DEFAULT_UPSAMPLE = 2
"""Fine pixels per coarse pixel side (256^2 -> 512^2 for the model grid)."""

DEFAULT_DETECTOR_SUBSAMPLES = 2
"""Sub-rays per detector bin (matches the fine grid's halved pixel at the isocentre)."""

FINE_MATRICES_IN_MEMORY = 2
"""Fine system matrices kept in memory (each is tens of MB to a few hundred MB; a build takes seconds)."""


def fine_geometry(geometry: Geometry, upsample: int, detector_subsamples: int) -> Geometry:
    """``geometry`` on a grid ``upsample`` times finer, each detector bin split in ``detector_subsamples``.

    Same angles, field of view, detector extent and (fan) distances; sub-bin ``m`` of bin ``k`` is
    fine bin ``k * detector_subsamples + m``.
    """
    if upsample < 1 or detector_subsamples < 1:
        raise ValueError(
            "independent simulation: upsample and detector_subsamples must be >= 1, got "
            f"{upsample} and {detector_subsamples}"
        )
    return dataclasses.replace(
        geometry,
        image_size=geometry.image_size * upsample,
        pixel_spacing_mm=geometry.pixel_spacing_mm / upsample,
        det_count=geometry.det_count * detector_subsamples,
        det_spacing_mm=geometry.det_spacing_mm / detector_subsamples,
    )


@functools.lru_cache(maxsize=FINE_MATRICES_IN_MEMORY)
def _fine_matrix(geometry: Geometry) -> torch.Tensor:
    """Joseph's matrix of the fine geometry as a CPU torch CSR tensor ``(V * D_f, H_f * W_f)`` (forward only)."""
    return csr_from_scipy(build_system_matrix(geometry), torch.float32)


def upsample_image(image: torch.Tensor, upsample: int) -> torch.Tensor:
    """Bicubic upsampling ``(N, H, W) -> (N, upsample H, upsample W)`` (pixel areas preserved in position)."""
    if upsample == 1:
        return image
    return F.interpolate(image[:, None], scale_factor=upsample, mode="bicubic", align_corners=False)[:, 0]


def fine_line_integrals(
    mu: torch.Tensor,
    geometry: Geometry,
    upsample: int = DEFAULT_UPSAMPLE,
    detector_subsamples: int = DEFAULT_DETECTOR_SUBSAMPLES,
) -> torch.Tensor:
    """Effective line integrals of attenuation images under the fine model (module docstring).

    Args:
        mu: ``(N, H, W)`` attenuation in 1/mm on ``geometry``'s grid (``H = geometry.image_size``).
        geometry: the reconstruction geometry whose physical scanner is simulated.
        upsample: fine pixels per coarse pixel side.
        detector_subsamples: sub-rays per detector bin.

    Returns:
        ``(N, V, D)`` dimensionless ``-log(mean_k exp(-p_k))`` on ``mu``'s device and dtype.
    """
    size = geometry.image_size
    if mu.ndim != 3 or tuple(mu.shape[-2:]) != (size, size):
        raise ValueError(
            f"independent simulation: expected attenuation images (N, {size}, {size}), got shape {tuple(mu.shape)}"
        )
    fine = fine_geometry(geometry, upsample, detector_subsamples)
    matrix = _fine_matrix(fine)
    mu_fine = upsample_image(mu.detach().to("cpu", torch.float32), upsample).clamp_min(0.0)
    flat = mu_fine.reshape(mu_fine.shape[0], -1)
    sub_rays = torch.sparse.mm(matrix, flat.t().contiguous()).t()  # (N, V * D_f)
    sub_rays = sub_rays.to(torch.float64).reshape(
        mu.shape[0], geometry.n_views, geometry.det_count, detector_subsamples
    )
    # -log(mean exp(-p)) computed stably as -(logsumexp(-p) - log k)
    k = torch.tensor(float(detector_subsamples), dtype=torch.float64)
    effective = -(torch.logsumexp(-sub_rays, dim=-1) - torch.log(k))
    return effective.to(device=mu.device, dtype=mu.dtype)
