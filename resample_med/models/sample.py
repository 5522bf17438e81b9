"""Unconditional DDIM sampling from a latent prior (Song et al. 2021, Eq. 12 with eta = 0).

Used to look at what the prior has learnt (sample grids, distribution checks), not for
reconstruction (that is ``resample_med.sampling``). Works on anything with the ``LatentPrior``
interface: ``predict_noise`` (epsilon), ``decode``, ``scheduler``, ``latent_shape``.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler


@torch.no_grad()
def sample_latents(
    prior, n: int, steps: int, generator: torch.Generator, eta: float = 0.0, batch_size: int = 16
) -> torch.Tensor:
    """n latents (n, C, h, w) by ``steps`` DDIM steps from z_T ~ N(0, I) drawn with ``generator`` (CPU)."""
    config = dict(prior.scheduler.config)
    config["prediction_type"] = "epsilon"  # predict_noise always returns epsilon
    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    device = next(prior.parameters()).device
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        z = torch.randn((b, *prior.latent_shape), generator=generator).to(device)
        for t in scheduler.timesteps:
            eps = prior.predict_noise(z, t.to(device))
            z = scheduler.step(eps, t, z, eta=eta, generator=generator).prev_sample
        out.append(z)
    return torch.cat(out)


@torch.no_grad()
def sample_images(
    prior, n: int, steps: int, generator: torch.Generator, eta: float = 0.0, batch_size: int = 16
) -> torch.Tensor:
    """n images (n, 1, H, W) in model units: DDIM latents decoded by the autoencoder."""
    z = sample_latents(prior, n, steps, generator, eta, batch_size)
    return torch.cat([prior.decode(z[i : i + batch_size]) for i in range(0, n, batch_size)])
