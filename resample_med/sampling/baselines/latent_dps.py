"""Latent-DPS: diffusion posterior sampling (Chung et al., ICLR 2023, Alg. 1) run in the latent
space of the prior, with gradients through the decoder -- the soft-consistency baseline that
ReSample's hard consistency is compared with (ReSample, Sec. 5).

Per step: ``z'_{t-1} = DDIM(z_t)``, then ``z_{t-1} = z'_{t-1} - step_size * grad_{z_t} ||y - A D(z0_hat(z_t))||``
(DPS's ``zeta_t = zeta' / ||y - A(x0_hat)||`` on the squared norm is the same step on the norm,
up to the factor 2 absorbed in ``step_size``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from resample_med.sampling import tuned
from resample_med.sampling.ddim import DiffusionSchedule, ddim_step
from resample_med.sampling.dps import measurement_gradient
from resample_med.sampling.linalg import batch_sq_norm
from resample_med.sampling.posterior import first_of_each, repeat_for_samples, summarise_samples, validate_n_samples
from resample_med.sampling.prior import LatentPrior, LinearOperator
from resample_med.sampling.result import ProgressCallback, ProgressEvent, Reconstruction, notify
from resample_med.sampling.rng import Generator, generator_or_default, standard_normal


@dataclass(frozen=True)
class LatentDPSConfig:
    """Attributes:
    num_steps: DDIM steps.
    eta: DDIM stochasticity (DPS uses ancestral sampling, ``eta = 1``).
    step_size: guidance step ``zeta`` on the residual norm.
    preview_every: decoded previews every this many steps (0: never)."""

    num_steps: int = 50
    eta: float = 1.0
    step_size: float = 1.0
    preview_every: int = 10


PRESETS: dict[str, LatentDPSConfig] = {
    "paper": LatentDPSConfig(num_steps=500),
    "default": LatentDPSConfig(),
    "fast": LatentDPSConfig(num_steps=20, step_size=tuned.LATENT_DPS_FAST_STEP_SIZE, preview_every=4),
}


def latent_dps(
    y: Tensor,
    operator: LinearOperator,
    prior: LatentPrior,
    config: LatentDPSConfig,
    *,
    generator: Generator | None = None,
    callback: ProgressCallback | None = None,
    n_samples: int = 1,
) -> Reconstruction:
    """Latent DPS: ``y (B, 1, V, D) -> x (B, 1, H, W)`` (mean over ``n_samples`` and per-pixel std)."""
    validate_n_samples(n_samples)
    gen = generator_or_default(generator, y.device)
    schedule = DiffusionSchedule.from_scheduler(prior.scheduler, config.num_steps)
    y_rep = repeat_for_samples(y, n_samples)
    z = standard_normal(y.new_empty((y_rep.shape[0], *prior.latent_shape)), gen)
    for i in range(schedule.num_steps):
        t = schedule.timesteps[i].to(y.device).expand(z.shape[0])
        ab_t, ab_prev = float(schedule.alpha_bar[i]), float(schedule.alpha_bar_prev[i])
        mg = measurement_gradient(z, t, ab_t, y_rep, operator, prior)
        z = ddim_step(mg.z0_hat, mg.eps, ab_t, ab_prev, eta=config.eta, generator=gen) - config.step_size * mg.grad
        preview = None
        if callback is not None and config.preview_every and (i + 1) % config.preview_every == 0:
            with torch.no_grad():
                preview = prior.decode(first_of_each(mg.z0_hat, n_samples))
        notify(callback, ProgressEvent("sampling", i + 1, schedule.num_steps, preview))
    with torch.no_grad():
        x = prior.decode(z)
    mean, std = summarise_samples(x, n_samples)
    with torch.no_grad():
        rel = (batch_sq_norm(y - operator.forward(mean)) / batch_sq_norm(y).clamp_min(1e-30)).sqrt()
    return Reconstruction(
        image=mean,
        std=std,
        info={
            "method": "latent_dps",
            "config": asdict(config),
            "n_samples": n_samples,
            "relative_residual": rel.tolist(),
        },
    )
