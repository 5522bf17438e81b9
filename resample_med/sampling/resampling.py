"""Mapping a data-consistent clean latent back to noise level ``t-1``.

ReSample (Song et al., ICLR 2024, Sec. 3.2) replaces the unconditional DDIM state ``z'_{t-1}``
by a draw that mixes it with the data-consistent ``z0_y``; two ablations are provided beside it.
"""

from __future__ import annotations

from torch import Tensor

from resample_med.sampling.rng import Generator, standard_normal


def resample_variance(gamma: float, alpha_bar_t: float, alpha_bar_prev: float) -> float:
    """The resampling variance scale (ReSample eq. 10, the official code's choice):

    ``sigma_t^2 = gamma * (1 - ab_{t-1}) / (1 - ab_t) * (1 - ab_t / ab_{t-1})``,

    i.e. ``gamma`` times the DDPM posterior variance between ``t`` and ``t-1``; ``gamma`` is the
    user-facing knob (``--gamma``, the widget's gamma; 40 in the official code).
    """
    return gamma * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_prev)


def resample_moments(z0_y: Tensor, z_prime: Tensor, sigma_sq: float, alpha_bar_prev: float) -> tuple[Tensor, float]:
    """Mean and variance of the stochastic resampling distribution (ReSample eq. 9, Prop. 3.1):

    ``z_{t-1} ~ N( (sigma_t^2 sqrt(ab_{t-1}) z0_y + (1 - ab_{t-1}) z'_{t-1}) / (sigma_t^2 + 1 - ab_{t-1}),
                   sigma_t^2 (1 - ab_{t-1}) / (sigma_t^2 + 1 - ab_{t-1}) I )``

    -- the product of ``N(sqrt(ab_{t-1}) z0_y, (1 - ab_{t-1}) I)`` (the forward process from
    ``z0_y``) and ``N(z'_{t-1}, sigma_t^2 I)`` (the unconditional DDIM state).

    Args:
        z0_y: ``(B, C, h, w)`` data-consistent clean latent.
        z_prime: ``(B, C, h, w)`` unconditional DDIM state ``z'_{t-1}``.
        sigma_sq: ``sigma_t^2`` from :func:`resample_variance`.
        alpha_bar_prev: ``ab_{t-1}``.

    Returns:
        ``(mean (B, C, h, w), variance)``.
    """
    one_minus = 1.0 - alpha_bar_prev
    denom = sigma_sq + one_minus
    mean = (sigma_sq * alpha_bar_prev**0.5 * z0_y + one_minus * z_prime) / denom
    return mean, sigma_sq * one_minus / denom


def stochastic_resample(
    z0_y: Tensor,
    z_prime: Tensor,
    *,
    gamma: float,
    alpha_bar_t: float,
    alpha_bar_prev: float,
    generator: Generator,
) -> Tensor:
    """One draw of ReSample's stochastic resampling (eqs. 9-10); shapes ``(B, C, h, w)``."""
    sigma_sq = resample_variance(gamma, alpha_bar_t, alpha_bar_prev)
    mean, var = resample_moments(z0_y, z_prime, sigma_sq, alpha_bar_prev)
    return mean + var**0.5 * standard_normal(mean, generator)


def stochastic_encode(z0_y: Tensor, *, alpha_bar_prev: float, generator: Generator) -> Tensor:
    """Ablation "stochastic encoding": the forward process from ``z0_y`` alone,
    ``z_{t-1} = sqrt(ab_{t-1}) z0_y + sqrt(1 - ab_{t-1}) n``, ``n ~ N(0, I)`` (ReSample Sec. 5.3,
    the ``gamma -> infinity`` limit of eq. 9)."""
    return alpha_bar_prev**0.5 * z0_y + (1.0 - alpha_bar_prev) ** 0.5 * standard_normal(z0_y, generator)


def ddim_from_z0(z0_y: Tensor, eps: Tensor, *, alpha_bar_prev: float) -> Tensor:
    """Ablation "no resampling": the deterministic DDIM step from ``z0_y`` with the network's
    noise estimate, ``z_{t-1} = sqrt(ab_{t-1}) z0_y + sqrt(1 - ab_{t-1}) eps_theta(z_t, t)``
    (the ``gamma -> infinity`` mean with DDIM's direction instead of fresh noise)."""
    return alpha_bar_prev**0.5 * z0_y + (1.0 - alpha_bar_prev) ** 0.5 * eps
