"""ReSample (Song, Kwon et al., ICLR 2024, Alg. 1): DDIM in latent space with hard data
consistency and stochastic resampling, composed from the parts in this package.

Per step ``i`` (train step ``t``, next ``t-1``):

1. ``eps = eps_theta(z_t, t)``, ``z0_hat = (z_t - sqrt(1-ab_t) eps) / sqrt(ab_t)`` (Tweedie);
2. ``z'_{t-1}`` = DDIM step (:mod:`~resample_med.sampling.ddim`), optionally followed by a
   DPS-style gradient step (:mod:`~resample_med.sampling.dps`);
3. on a consistency step (:mod:`~resample_med.sampling.schedule`): optionally "time travel"
   (a few unconditional steps ahead for a sharper ``z0_hat``), then pixel- or latent-space
   consistency (:mod:`~resample_med.sampling.consistency`) giving ``z0_y``, and
   ``z_{t-1}`` ~ stochastic resampling of ``(z0_y, z'_{t-1})`` (:mod:`~resample_med.sampling.resampling`);
   otherwise ``z_{t-1} = z'_{t-1}``.

After the last step a final consistency is applied and the latent decoded. With
``config.z_weight > 0`` (volume mode) the batch holds adjacent slices in z order and every
consistency step fits them jointly with a penalty on their z differences. Slices in a batch,
and ``n_samples`` posterior samples of each, run together as one batch. With a warm start
(:mod:`~resample_med.sampling.warm_start`) the loop begins at step ``config.warm_start_step`` from the
noised encoding of a classical estimate instead of at step 0 from pure noise. With
``config.refine_tv_weight > 0`` the mean of the samples is refined by anchored TV
(:mod:`~resample_med.sampling.refine`).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from resample_med.sampling.config import ReSampleConfig, posterior_samples, resolve_resample_config
from resample_med.sampling.consistency import latent_consistency, pixel_consistency, pixel_least_squares
from resample_med.sampling.ddim import DiffusionSchedule, ddim_step, tweedie_z0
from resample_med.sampling.dps import measurement_gradient
from resample_med.sampling.linalg import SolverTrace, batch_sq_norm, discrepancy_threshold
from resample_med.sampling.posterior import (
    first_of_each,
    repeat_for_samples,
    summarise_samples,
    validate_n_samples,
)
from resample_med.sampling.prior import LatentPrior, LinearOperator
from resample_med.sampling.refine import refine_mean
from resample_med.sampling.resampling import ddim_from_z0, stochastic_encode, stochastic_resample
from resample_med.sampling.result import ProgressCallback, ProgressEvent, Reconstruction, notify
from resample_med.sampling.rng import Generator, generator_or_default, standard_normal
from resample_med.sampling.schedule import StepPlan, plan_steps
from resample_med.sampling.warm_start import initial_estimate, warm_latent
from resample_med.sampling.zcoupling import z_penalty_scale


class _Problem:
    """The fixed parts of one run: prior, operator, (repeated) data, discrepancy levels and the
    z coupling (``z_scale``, 0 in slice mode; ``stride``: items between z neighbours)."""

    def __init__(
        self,
        prior: LatentPrior,
        operator: LinearOperator,
        y: Tensor,
        threshold_px: Tensor | None,
        threshold_lat: Tensor | None,
        z_scale: float = 0.0,
        stride: int = 1,
    ) -> None:
        self.prior = prior
        self.operator = operator
        self.y = y
        self.threshold_px = threshold_px
        self.threshold_lat = threshold_lat
        self.z_scale = z_scale
        self.stride = stride

    def eps(self, z: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            return self.prior.predict_noise(z, t.expand(z.shape[0]))


def _time_travel(problem: _Problem, z_prime: Tensor, step: int, look_ahead: int, schedule: DiffusionSchedule) -> Tensor:
    """Tweedie estimate after ``look_ahead`` unconditional DDIM steps from ``z'_{t-1}``
    (the official code's "time travel"); ``look_ahead >= 1``."""
    z = z_prime
    z0 = z_prime
    for k in range(step + 1, step + 1 + look_ahead):
        ab, ab_prev = float(schedule.alpha_bar[k]), float(schedule.alpha_bar_prev[k])
        eps = problem.eps(z, schedule.timesteps[k].to(z.device))
        z0 = tweedie_z0(z, eps, ab)
        z = ddim_step(z0, eps, ab, ab_prev)
    return z0


def _make_consistent(
    problem: _Problem,
    kind: str,
    z0: Tensor,
    config: ReSampleConfig,
    max_iter: int | None = None,
    threshold: Tensor | None = None,
) -> tuple[Tensor, SolverTrace]:
    """``z0_y`` from ``z0`` by the consistency named ``kind`` (``"pixel"`` | ``"latent"``);
    ``threshold`` replaces the latent fit's discrepancy level when given."""
    prior = problem.prior
    if kind == "pixel":
        return pixel_consistency(
            z0,
            problem.y,
            problem.operator,
            prior.decode,
            prior.encode,
            config.pixel,
            problem.threshold_px,
            z_scale=problem.z_scale,
            stride=problem.stride,
        )
    latent_cfg = config.latent if max_iter is None else replace(config.latent, max_iter=max_iter)
    return latent_consistency(
        z0,
        problem.y,
        problem.operator,
        prior.decode,
        latent_cfg,
        problem.threshold_lat if threshold is None else threshold,
        z_scale=problem.z_scale,
        stride=problem.stride,
    )


def _remap(
    config: ReSampleConfig,
    z0_y: Tensor,
    z_prime: Tensor,
    eps: Tensor,
    ab_t: float,
    ab_prev: float,
    generator: Generator,
) -> Tensor:
    """``z_{t-1}`` from the consistent ``z0_y``: ReSample's resampling or an ablation."""
    if config.resampling == "stochastic":
        return stochastic_resample(
            z0_y, z_prime, gamma=config.gamma, alpha_bar_t=ab_t, alpha_bar_prev=ab_prev, generator=generator
        )
    if config.resampling == "encode":
        return stochastic_encode(z0_y, alpha_bar_prev=ab_prev, generator=generator)
    return ddim_from_z0(z0_y, eps, alpha_bar_prev=ab_prev)


def _trace_record(step: int, kind: str, trace: SolverTrace, y: Tensor) -> dict:
    rel = (trace.residual_sq / batch_sq_norm(y).clamp_min(1e-30)).sqrt()
    return {"step": step, "kind": kind, "iterations": trace.iterations.tolist(), "relative_residual": rel.tolist()}


def resample(
    y: Tensor,
    operator: LinearOperator,
    prior: LatentPrior,
    config: ReSampleConfig | str | None = None,
    *,
    noise_std: float | Tensor | None = None,
    generator: Generator | None = None,
    callback: ProgressCallback | None = None,
    n_samples: int | None = None,
) -> Reconstruction:
    """Reconstruct images from ``y = A x + n`` with ReSample.

    Args:
        y: ``(B, 1, V, D)`` measurements of ``B`` slices.
        operator: ``A`` acting on model-unit images ``(B, 1, H, W)``.
        prior: the latent diffusion prior.
        config: a :class:`ReSampleConfig` or a preset name (``"paper"``, ``"default"``, ``"fast"``).
        noise_std: per-measurement noise std (scalar or broadcastable to ``y``); enables the
            discrepancy-principle stopping of every consistency step.
        generator: the only source of randomness (default: seeded with 0 on ``y``'s device).
        callback: receives :class:`ProgressEvent` s (``"sampling"`` per step, with a decoded
            preview every ``config.preview_every`` steps; ``"final_consistency"`` at the end);
            raising :class:`ReconstructionCancelled` stops the run.
        n_samples: posterior samples per slice (``None``: ``config.posterior_samples``); ``> 1``
            gives their mean and a per-pixel std.

    Returns:
        :class:`Reconstruction` with ``image (B, 1, H, W)``, ``std`` and ``info`` (the config,
        every consistency step's iterations and relative residuals).
    """
    cfg = resolve_resample_config(config)
    n_samples = posterior_samples(cfg, n_samples)
    validate_n_samples(n_samples)
    gen = generator_or_default(generator, y.device)
    schedule = DiffusionSchedule.from_scheduler(prior.scheduler, cfg.num_steps)
    plans: list[StepPlan] = plan_steps(cfg.num_steps, cfg.schedule)

    y_rep = repeat_for_samples(y, n_samples)

    def thresholds(tau: float) -> Tensor | None:
        thr = discrepancy_threshold(y, noise_std, tau)
        return None if thr is None else repeat_for_samples(thr, n_samples)

    with torch.no_grad():
        image_shape = tuple(operator.adjoint(y[:1]).shape) if cfg.z_weight else (1, 1, 1, 1)
    z_scale = z_penalty_scale(operator, image_shape, cfg.z_weight, y.device, y.dtype)
    problem = _Problem(
        prior, operator, y_rep, thresholds(cfg.pixel.tau), thresholds(cfg.latent.tau), z_scale, n_samples
    )
    start = cfg.warm_start_step
    if cfg.warm_start == "none":
        z = standard_normal(y.new_empty((y_rep.shape[0], *prior.latent_shape)), gen)
    else:
        x_init = repeat_for_samples(
            initial_estimate(cfg.warm_start, y, operator, gen, cfg.warm_start_tv_iterations), n_samples
        )
        z = warm_latent(prior, x_init, float(schedule.alpha_bar[start]), gen)
    records: list[dict] = []
    n_run = cfg.num_steps - start

    for i, plan in enumerate(plans):
        if i < start:
            continue
        t = schedule.timesteps[i].to(y.device)
        ab_t, ab_prev = float(schedule.alpha_bar[i]), float(schedule.alpha_bar_prev[i])
        if plan.dps:
            mg = measurement_gradient(z, t.expand(z.shape[0]), ab_t, y_rep, operator, prior)
            eps, z0_hat = mg.eps, mg.z0_hat
        else:
            eps = problem.eps(z, t)
            z0_hat = tweedie_z0(z, eps, ab_t)
        z_prime = ddim_step(z0_hat, eps, ab_t, ab_prev, eta=cfg.eta, generator=gen)
        if plan.dps:
            z_prime = z_prime - cfg.dps_scale * ab_t * mg.grad
        z0_estimate = z0_hat
        if plan.consistency == "none":
            z = z_prime
        else:
            z0_start = _time_travel(problem, z_prime, i, plan.time_travel, schedule) if plan.time_travel else z0_hat
            z0_estimate, trace = _make_consistent(problem, plan.consistency, z0_start, cfg)
            records.append(_trace_record(i, plan.consistency, trace, y_rep))
            z = _remap(cfg, z0_estimate, z_prime, eps, ab_t, ab_prev, gen)
        preview = None
        done = i + 1 - start
        if callback is not None and cfg.preview_every and done % cfg.preview_every == 0:
            with torch.no_grad():
                preview = prior.decode(first_of_each(z0_estimate, n_samples))
        notify(callback, ProgressEvent("sampling", done, n_run, preview))

    final_trace = None
    final_threshold = None if cfg.final_tau is None else thresholds(cfg.final_tau)
    with torch.no_grad():
        if cfg.final_consistency == "latent":
            z, final_trace = _make_consistent(
                problem, "latent", z, cfg, max_iter=cfg.final_max_iter, threshold=final_threshold
            )
            x = prior.decode(z)
        elif cfg.final_consistency == "pixel":
            final_pixel = replace(cfg.pixel, max_iter=cfg.final_max_iter)
            threshold = problem.threshold_px if final_threshold is None else final_threshold
            x, final_trace = pixel_least_squares(
                prior.decode(z), y_rep, operator, final_pixel, threshold, z_scale=problem.z_scale, stride=problem.stride
            )
        else:
            x = prior.decode(z)
    if final_trace is not None:
        records.append(_trace_record(cfg.num_steps, f"final_{cfg.final_consistency}", final_trace, y_rep))
    mean, std = summarise_samples(x.detach(), n_samples)
    if cfg.refine_tv_weight > 0:
        mean = refine_mean(mean, y, operator, cfg, generator=gen)
    notify(callback, ProgressEvent("final_consistency", 1, 1, mean))
    with torch.no_grad():
        rel_res = (batch_sq_norm(y - operator.forward(mean)) / batch_sq_norm(y).clamp_min(1e-30)).sqrt()
    info = {
        "method": "resample",
        "config": cfg.to_dict(),
        "n_samples": n_samples,
        "consistency_steps": records,
        "relative_residual": rel_res.tolist(),
    }
    return Reconstruction(image=mean, std=std, info=info)
