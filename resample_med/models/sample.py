"""Unconditional DDIM sampling from a latent prior (Song et al. 2021, Eq. 12 with eta = 0).

Used to look at what the prior has learnt (sample grids, distribution checks, where in the reverse
process it loses tissue), not for reconstruction (that is ``resample_med.sampling``). Works on
anything with the ``LatentPrior`` interface: ``predict_noise`` (epsilon), ``decode``, ``scheduler``,
``latent_shape``.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler


def ddim_scheduler(prior, steps: int) -> DDIMScheduler:
    """The prior's noise schedule as a ``steps``-step DDIM scheduler on epsilon predictions
    (``predict_noise`` always returns epsilon); its ``timesteps`` run from high noise to low."""
    config = dict(prior.scheduler.config)
    config["prediction_type"] = "epsilon"
    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    return scheduler


@torch.no_grad()
def denoise_latents(
    prior,
    z: torch.Tensor,
    start_timestep: int,
    steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DDIM from latents z (B, C, h, w) at noise level ``start_timestep`` to z_0, over the timesteps of
    the ``steps``-step schedule that are <= ``start_timestep`` (all of them from pure noise)."""
    scheduler = ddim_scheduler(prior, steps)
    for t in scheduler.timesteps[scheduler.timesteps <= start_timestep]:
        eps = prior.predict_noise(z, t.to(z.device))
        z = scheduler.step(eps, t, z, eta=eta, generator=generator).prev_sample
    return z


@torch.no_grad()
def sample_latents(
    prior, n: int, steps: int, generator: torch.Generator, eta: float = 0.0, batch_size: int = 16
) -> torch.Tensor:
    """n latents (n, C, h, w) by ``steps`` DDIM steps from z_T ~ N(0, I) drawn with ``generator`` (CPU)."""
    device = next(prior.parameters()).device
    last_timestep = prior.scheduler.config.num_train_timesteps - 1
    out = []
    for start in range(0, n, batch_size):
        z = torch.randn((min(batch_size, n - start), *prior.latent_shape), generator=generator).to(device)
        out.append(denoise_latents(prior, z, last_timestep, steps, eta, generator))
    return torch.cat(out)


@torch.no_grad()
def sample_images(
    prior, n: int, steps: int, generator: torch.Generator, eta: float = 0.0, batch_size: int = 16
) -> torch.Tensor:
    """n images (n, 1, H, W) in model units: DDIM latents decoded by the autoencoder."""
    z = sample_latents(prior, n, steps, generator, eta, batch_size)
    return torch.cat([prior.decode(z[i : i + batch_size]) for i in range(0, n, batch_size)])
