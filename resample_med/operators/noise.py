"""Measurement simulation by the Beer-Lambert law: post-log sinograms with Poisson or Gaussian noise.

A ray with line integral ``p = int mu dl`` (dimensionless) reaches the detector with expected count
``lambda = I0 exp(-p)`` for ``I0`` incident photons. Measured counts ``N ~ Poisson(lambda)`` are
clamped at >= 1 (a zero count has no logarithm) and log-transformed into the post-log sinogram
``y = log(I0 / N)``. Its variance is approximately ``1 / lambda = exp(p) / I0`` (delta method), which
:func:`poisson_noise_variance` estimates from ``y`` itself. Randomness comes only from the
``torch.Generator`` passed in.
"""

from __future__ import annotations

import torch

MIN_COUNT = 1.0
"""Detector counts are clamped to at least this before the log transform."""


def simulate_post_log(
    line_integrals: torch.Tensor,
    photons: float | None = None,
    gaussian_sigma: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Post-log sinogram ``(...,) -> (...,)`` from noiseless line integrals.

    Args:
        line_integrals: ``A mu``, any shape, dimensionless (mu in 1/mm times lengths in mm).
        photons: incident count ``I0`` per ray for Poisson noise, or None.
        gaussian_sigma: standard deviation of additive Gaussian noise on the post-log data, or None.
        generator: required when any noise is requested; must live on ``line_integrals.device``.

    Returns:
        ``log(I0 / max(N, 1))`` with ``N ~ Poisson(I0 exp(-p))`` when ``photons`` is set,
        ``p + sigma * eps`` when ``gaussian_sigma`` is set, else a copy of ``p``.
    """
    where = "measurement noise"
    if photons is not None and gaussian_sigma is not None:
        raise ValueError(f"{where}: choose Poisson (photons) or Gaussian (gaussian_sigma) noise, not both")
    if photons is None and gaussian_sigma is None:
        return line_integrals.clone()
    if generator is None:
        raise ValueError(f"{where}: noise simulation needs an explicit torch.Generator for reproducibility")
    if photons is not None:
        if photons <= 0:
            raise ValueError(f"{where}: photons (I0) must be > 0, got {photons}")
        expected = photons * torch.exp(-line_integrals)
        counts = torch.poisson(expected, generator=generator).clamp_min(MIN_COUNT)
        return torch.log(torch.as_tensor(photons, dtype=counts.dtype, device=counts.device) / counts)
    assert gaussian_sigma is not None  # photons is None here, and not both are None
    if gaussian_sigma < 0:
        raise ValueError(f"{where}: gaussian_sigma must be >= 0, got {gaussian_sigma}")
    noise = torch.randn(
        line_integrals.shape, generator=generator, device=line_integrals.device, dtype=line_integrals.dtype
    )
    return line_integrals + gaussian_sigma * noise


def poisson_noise_variance(post_log: torch.Tensor, photons: float) -> torch.Tensor:
    """Per-ray variance estimate of post-log data, ``1 / (I0 exp(-y))``; same shape as ``post_log``."""
    if photons <= 0:
        raise ValueError(f"photons (I0) must be > 0, got {photons}")
    return torch.exp(post_log) / photons
