"""Beer-Lambert measurement simulation: reproducibility, Poisson statistics, clamping, Gaussian, errors."""

from __future__ import annotations

import math

import pytest
import torch

from resample_med.operators.noise import MIN_COUNT, poisson_noise_variance, simulate_post_log
from resample_med.units import MU_WATER_PER_MM, hu_to_mu


def _line_integrals(n: int = 20000) -> torch.Tensor:
    """Water paths of 0..300 mm: post-log values 0..5.8."""
    return hu_to_mu(torch.zeros(n)) * torch.linspace(0.0, 300.0, n)


def test_same_seed_same_noise_and_different_seed_different_noise() -> None:
    p = _line_integrals()
    a = simulate_post_log(p, photons=1e4, generator=torch.Generator().manual_seed(3))
    b = simulate_post_log(p, photons=1e4, generator=torch.Generator().manual_seed(3))
    c = simulate_post_log(p, photons=1e4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_poisson_mean_and_variance_match_the_delta_method() -> None:
    photons, path_mm, n = 1e5, 200.0, 200_000
    p = torch.full((n,), MU_WATER_PER_MM * path_mm, dtype=torch.float64)
    y = simulate_post_log(p, photons=photons, generator=torch.Generator().manual_seed(0))
    predicted_variance = math.exp(p[0].item()) / photons
    assert y.mean().item() == pytest.approx(p[0].item(), abs=5 * math.sqrt(predicted_variance / n) + 1e-4)
    assert y.var().item() == pytest.approx(predicted_variance, rel=0.03)
    estimate = poisson_noise_variance(y, photons)
    assert estimate.shape == y.shape
    assert estimate.mean().item() == pytest.approx(predicted_variance, rel=0.03)


def test_counts_are_clamped_before_the_log() -> None:
    photons = 10.0
    y = simulate_post_log(torch.full((1000,), 50.0), photons=photons, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(y).all()
    assert torch.allclose(y, torch.full_like(y, math.log(photons / MIN_COUNT)))


def test_gaussian_noise_and_noiseless() -> None:
    p = _line_integrals()
    y = simulate_post_log(p, gaussian_sigma=0.05, generator=torch.Generator().manual_seed(2))
    assert (y - p).std().item() == pytest.approx(0.05, rel=0.05)
    clean = simulate_post_log(p)
    assert torch.equal(clean, p) and clean.data_ptr() != p.data_ptr()


def test_errors_name_the_problem() -> None:
    p = _line_integrals(10)
    with pytest.raises(ValueError, match="measurement noise: .*torch.Generator"):
        simulate_post_log(p, photons=1e4)
    with pytest.raises(ValueError, match="not both"):
        simulate_post_log(p, photons=1e4, gaussian_sigma=0.1, generator=torch.Generator())
    with pytest.raises(ValueError, match="must be > 0"):
        simulate_post_log(p, photons=0.0, generator=torch.Generator())
    with pytest.raises(ValueError, match="must be > 0"):
        poisson_noise_variance(p, photons=-1.0)
