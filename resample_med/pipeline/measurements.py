"""Simulated CT measurements and their linearisation to model units.

Forward model (Beer-Lambert, post-log): for a slice in HU the attenuation is
``mu = mu_w (1 + HU/1000)`` (1/mm, clipped at 0) and the noiseless sinogram is the line integral
``A mu`` (dimensionless, ``A`` in the image's physical units). Poisson noise with ``I0`` photons per
ray gives ``y = -log(Poisson(I0 exp(-A mu)) / I0)``, whose per-ray variance is about
``1 / (I0 exp(-y))``.

Linearisation (used by every sampler): with ``x = HU/1000`` in model units,
``A mu = mu_w A 1 + mu_w A x``, so

    y_lin = y - mu_w A(1) = A_lin x + noise,   A_lin = mu_w A,

which keeps ``y_lin`` in the post-log units of ``y`` (the per-ray noise variance carries over
unchanged) while the unknown is the model-unit image the prior was trained on.

Simulation (``AcquisitionConfig.simulation``): ``"matched"`` computes ``A mu`` with the very
projector that reconstructs (the inverse crime: the data then fit the model exactly up to the
noise); ``"independent"`` computes the line integrals with the finer model of
:mod:`resample_med.operators.fine_model` (2x grid, bicubic, detector-bin integration) and the
same physical geometry, so the reconstruction model is wrong by its discretisation error, as on
a real scanner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from resample_med.operators import Projector, make_projector
from resample_med.operators.fine_model import fine_line_integrals
from resample_med.operators.noise import poisson_noise_variance, simulate_post_log
from resample_med.pipeline.acquisition import AcquisitionConfig
from resample_med.units import MU_WATER_PER_MM, hu_to_mu

NOISELESS_STD_FLOOR = 1e-4
"""Noise std (post-log units) assumed for noiseless data, so noise-level stopping rules stay finite."""


@dataclass(frozen=True, eq=False)
class Measurements:
    """Post-log sinograms of ``N`` slices and everything needed to invert them.

    Attributes:
        sinogram: ``(N, V, D)`` post-log data ``y``.
        projector: the projector ``A`` for the slices' grid (``(..., H, W) -> (..., V, D)``).
        acquisition: how the data were (or are assumed to have been) acquired.
        pixel_spacing_mm: in-plane pixel spacing of the reconstruction grid.
        noise_variance: ``(N, V, D)`` per-ray variance of ``y``, or ``None`` when noiseless.
        reference_hu: ``(N, H, W)`` ground truth in HU when known (simulated data), else ``None``.
    """

    sinogram: Tensor
    projector: Projector
    acquisition: AcquisitionConfig
    pixel_spacing_mm: float
    noise_variance: Tensor | None = None
    reference_hu: Tensor | None = None

    @property
    def n_slices(self) -> int:
        """Number of slices ``N``."""
        return int(self.sinogram.shape[0])

    @property
    def image_size(self) -> int:
        """Side ``H = W`` of the reconstruction grid."""
        return int(self.projector.geometry.image_size)

    def select(self, indices: slice | list[int]) -> Measurements:
        """The measurements of a subset of slices (same projector)."""
        return Measurements(
            sinogram=self.sinogram[indices],
            projector=self.projector,
            acquisition=self.acquisition,
            pixel_spacing_mm=self.pixel_spacing_mm,
            noise_variance=None if self.noise_variance is None else self.noise_variance[indices],
            reference_hu=None if self.reference_hu is None else self.reference_hu[indices],
        )


class AttenuationOperator:
    """``A_lin = mu_w A``: model-unit images ``(B, 1, H, W)`` -> linearised data ``(B, 1, V, D)``.

    Implements the samplers' ``LinearOperator`` protocol (``forward``, ``adjoint``, ``fbp``); the
    adjoint is exact because the projector's is.
    """

    def __init__(self, projector: Projector, mu_water: float = MU_WATER_PER_MM) -> None:
        self.projector = projector
        self.mu_water = mu_water

    def forward(self, x: Tensor) -> Tensor:
        """``A_lin x``; ``(..., H, W) -> (..., V, D)``."""
        return self.mu_water * self.projector.forward(x)

    def adjoint(self, y: Tensor) -> Tensor:
        """``A_lin^T y``; ``(..., V, D) -> (..., H, W)``."""
        return self.mu_water * self.projector.adjoint(y)

    def fbp(self, y: Tensor, filter_name: str = "ramp") -> Tensor:
        """Filtered back-projection inverse of :meth:`forward`; ``(..., V, D) -> (..., H, W)``."""
        return self.projector.fbp(y, filter_name=filter_name) / self.mu_water

    __call__ = forward


@dataclass(frozen=True, eq=False)
class LinearProblem:
    """``y = A x + n`` in model units, batched for the samplers.

    Attributes:
        y: ``(N, 1, V, D)`` linearised data ``y_lin``.
        operator: ``A_lin`` (model units -> ``y`` units).
        noise_std: ``(N, 1, V, D)`` per-ray noise std in ``y`` units (the samplers' discrepancy
            principle stops at ``||y - A x||^2 <= tau * sum(noise_std^2)``).
    """

    y: Tensor
    operator: AttenuationOperator
    noise_std: Tensor


def projector_for(
    acquisition: AcquisitionConfig, image_size: int, pixel_spacing_mm: float, device: torch.device | str | None = None
) -> Projector:
    """The (cached) projector of ``acquisition`` on an ``image_size``^2 grid of ``pixel_spacing_mm``."""
    geometry = acquisition.make_geometry(image_size, float(pixel_spacing_mm))
    return make_projector(geometry, device=device)


def simulate_measurements(
    hu: np.ndarray | Tensor,
    pixel_spacing_mm: float,
    acquisition: AcquisitionConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Measurements:
    """Simulate post-log sinograms of HU slices.

    Args:
        hu: ``(N, H, W)`` (or ``(H, W)``) slices in HU, ``H == W``.
        pixel_spacing_mm: in-plane pixel spacing, so line integrals are in physical units.
        acquisition: geometry, views, noise and simulation model (``matched`` or ``independent``,
            module docstring).
        generator: the only source of randomness (Poisson / Gaussian noise); ``None`` is allowed
            only for noiseless acquisitions.
        device: where the projector and data live.

    Returns:
        :class:`Measurements` with ``reference_hu`` set to the input (clipped at -1000 HU, the
        lowest value the attenuation model can represent) and the reconstruction grid's
        projector, whichever model simulated the data.
    """
    hu_t = torch.as_tensor(np.asarray(hu) if not isinstance(hu, Tensor) else hu, dtype=torch.float32)
    if hu_t.ndim == 2:
        hu_t = hu_t[None]
    if hu_t.ndim != 3 or hu_t.shape[-1] != hu_t.shape[-2]:
        raise ValueError(f"expected square HU slices (N, H, W), got shape {tuple(hu_t.shape)}")
    noisy = acquisition.photons is not None or bool(acquisition.gaussian_sigma)
    if noisy and generator is None:
        raise ValueError("a noisy acquisition needs an explicit torch.Generator for reproducibility")
    projector = projector_for(acquisition, int(hu_t.shape[-1]), pixel_spacing_mm, device)
    hu_t = hu_t.to(projector.device)
    mu = hu_to_mu(hu_t)
    if acquisition.simulation == "independent":
        line_integrals = fine_line_integrals(mu, projector.geometry)
    else:
        line_integrals = projector.forward(mu)
    sinogram = simulate_post_log(line_integrals, acquisition.photons, acquisition.gaussian_sigma, generator)
    return Measurements(
        sinogram=sinogram,
        projector=projector,
        acquisition=acquisition,
        pixel_spacing_mm=float(pixel_spacing_mm),
        noise_variance=noise_variance(sinogram, acquisition),
        reference_hu=hu_t.clamp(min=-1000.0),
    )


def noise_variance(sinogram: Tensor, acquisition: AcquisitionConfig) -> Tensor | None:
    """Per-ray variance ``(N, V, D)`` of post-log data: Poisson ``1/(I0 e^{-y})`` plus ``sigma^2``."""
    variance = None
    if acquisition.photons is not None:
        variance = poisson_noise_variance(sinogram, acquisition.photons)
    if acquisition.gaussian_sigma:
        gaussian = torch.full_like(sinogram, acquisition.gaussian_sigma**2)
        variance = gaussian if variance is None else variance + gaussian
    return variance


def linearise(measurements: Measurements, mu_water: float = MU_WATER_PER_MM) -> LinearProblem:
    """``y_lin = y - mu_w A(1)``, ``A_lin = mu_w A``: the model-unit linear problem (module docstring)."""
    projector = measurements.projector
    size = measurements.image_size
    ones = torch.ones(1, size, size, dtype=measurements.sinogram.dtype, device=measurements.sinogram.device)
    offset = mu_water * projector.forward(ones)
    y_lin = (measurements.sinogram - offset)[:, None]
    if measurements.noise_variance is None:
        noise_std = torch.full_like(y_lin, NOISELESS_STD_FLOOR)
    else:
        noise_std = measurements.noise_variance[:, None].sqrt().clamp(min=NOISELESS_STD_FLOOR)
    return LinearProblem(y=y_lin, operator=AttenuationOperator(projector, mu_water), noise_std=noise_std)
