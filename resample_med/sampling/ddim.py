"""DDIM sampling parts: the step schedule, Tweedie's estimate and the DDIM update.

Notation (Song, Meng & Ermon 2021, "DDIM"; ReSample, Song et al. 2024): ``ab_t`` is the
cumulative product of ``alpha`` at train step ``t`` (``alphas_cumprod``), and the forward
process is ``z_t = sqrt(ab_t) z_0 + sqrt(1 - ab_t) eps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from torch import Tensor

from resample_med.sampling.rng import Generator, standard_normal


@dataclass(frozen=True)
class DiffusionSchedule:
    """The ``S`` sampling steps of a DDIM run, largest noise first.

    Attributes:
        timesteps: ``(S,)`` long, the train steps ``t_i`` visited (descending).
        alpha_bar: ``(S,)`` ``ab_{t_i}``.
        alpha_bar_prev: ``(S,)`` ``ab`` of the next visited step, ``ab_{t_{i+1}}`` (the
            scheduler's final ``alpha_cumprod`` after the last step).
    """

    timesteps: Tensor
    alpha_bar: Tensor
    alpha_bar_prev: Tensor

    @property
    def num_steps(self) -> int:
        """``S``."""
        return int(self.timesteps.shape[0])

    @classmethod
    def from_scheduler(cls, scheduler: DDIMScheduler, num_steps: int) -> DiffusionSchedule:
        """The scheduler's own spacing (``timestep_spacing``) for ``num_steps`` steps.

        Works for any ``1 <= num_steps <= T``; the caller's scheduler is not modified (a copy
        is configured).
        """
        n_train = int(scheduler.config.num_train_timesteps)
        if not 1 <= num_steps <= n_train:
            raise ValueError(f"num_steps={num_steps} must lie in [1, {n_train}] (the scheduler's num_train_timesteps)")
        local = DDIMScheduler.from_config(scheduler.config)
        local.set_timesteps(num_steps)
        timesteps = local.timesteps.to(torch.long).cpu()
        alphas = local.alphas_cumprod.to(torch.float64).cpu()
        final = torch.as_tensor(local.final_alpha_cumprod, dtype=torch.float64).reshape(1)
        alpha_bar = alphas[timesteps]
        alpha_bar_prev = torch.cat([alphas[timesteps[1:]], final])
        return cls(timesteps=timesteps, alpha_bar=alpha_bar, alpha_bar_prev=alpha_bar_prev)


def tweedie_z0(z_t: Tensor, eps: Tensor, alpha_bar_t: float) -> Tensor:
    """Tweedie's estimate of the clean latent, ``E[z_0 | z_t]`` (ReSample eq. 4 / DDIM eq. 12):

    ``z0_hat = (z_t - sqrt(1 - ab_t) eps_theta(z_t, t)) / sqrt(ab_t)``.

    (The official ReSample code multiplies ``eps`` by ``1 - ab_t`` instead of its square root;
    that is a bug, fixed here.) Shapes: ``(B, C, h, w)`` in and out.
    """
    return (z_t - (1.0 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t**0.5


def ddim_step(
    z0_hat: Tensor,
    eps: Tensor,
    alpha_bar_t: float,
    alpha_bar_prev: float,
    *,
    eta: float = 0.0,
    generator: Generator | None = None,
) -> Tensor:
    """One DDIM update ``z_t -> z_{t-1}`` (DDIM eq. 12):

    ``z_{t-1} = sqrt(ab_prev) z0_hat + sqrt(1 - ab_prev - s^2) eps + s * n``, with
    ``s = eta * sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))`` and ``n ~ N(0, I)``
    (``eta = 0``: the deterministic DDIM; ``eta = 1``: DDPM's ancestral variance).

    Args:
        z0_hat, eps: ``(B, C, h, w)`` Tweedie estimate and predicted noise at ``t``.
        alpha_bar_t, alpha_bar_prev: ``ab_t`` and ``ab_{t-1}``.
        eta: DDIM stochasticity.
        generator: needed when ``eta > 0``.
    """
    sigma_sq = 0.0
    if eta > 0.0:
        sigma_sq = eta**2 * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_prev)
    z_prev = alpha_bar_prev**0.5 * z0_hat + max(1.0 - alpha_bar_prev - sigma_sq, 0.0) ** 0.5 * eps
    if sigma_sq > 0.0:
        if generator is None:
            raise ValueError("ddim_step with eta > 0 needs a generator")
        z_prev = z_prev + sigma_sq**0.5 * standard_normal(z0_hat, generator)
    return z_prev
