"""Unit tests of ReSample's parts: DDIM/Tweedie, resampling draws, the schedule, consistency
solvers, linear algebra helpers and config serialisation."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest
import torch
from diffusers import DDIMScheduler

from resample_med.sampling import PRESETS, ReSampleConfig
from resample_med.sampling.consistency import (
    LatentConsistencyConfig,
    PixelConsistencyConfig,
    latent_consistency,
    pixel_consistency,
)
from resample_med.sampling.ddim import DiffusionSchedule, ddim_step, tweedie_z0
from resample_med.sampling.linalg import batch_sq_norm, cgls_solve, discrepancy_threshold, operator_norm
from resample_med.sampling.resampling import (
    resample_moments,
    resample_variance,
    stochastic_encode,
    stochastic_resample,
)
from resample_med.sampling.schedule import ScheduleConfig, consistency_kind, plan_steps
from resample_med.sampling.testing import DenseOperator, GaussianLatentPrior


@pytest.fixture()
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.mark.parametrize("num_steps", [1, 7, 50, 500, 1000])
def test_schedule_any_step_count(num_steps: int) -> None:
    sched = DiffusionSchedule.from_scheduler(DDIMScheduler(), num_steps)
    assert sched.num_steps == num_steps
    assert torch.all(sched.timesteps[:-1] > sched.timesteps[1:])
    assert torch.all(sched.alpha_bar_prev > sched.alpha_bar)
    assert sched.alpha_bar_prev[-1] == pytest.approx(1.0)


def test_schedule_rejects_bad_step_counts() -> None:
    for bad in (0, 1001):
        with pytest.raises(ValueError, match=r"num_steps=\d+ must lie in \[1, 1000\]"):
            DiffusionSchedule.from_scheduler(DDIMScheduler(), bad)


def test_schedule_does_not_mutate_scheduler() -> None:
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(10)
    before = scheduler.timesteps.clone()
    DiffusionSchedule.from_scheduler(scheduler, 37)
    assert torch.equal(scheduler.timesteps, before)


def test_tweedie_inverts_forward_process_and_ddim_step(gen: torch.Generator) -> None:
    z0 = torch.randn(3, 4, 8, 8, generator=gen)
    eps = torch.randn(3, 4, 8, 8, generator=gen)
    ab_t, ab_prev = 0.3, 0.6
    z_t = math.sqrt(ab_t) * z0 + math.sqrt(1 - ab_t) * eps
    assert torch.allclose(tweedie_z0(z_t, eps, ab_t), z0, atol=1e-5)
    expected = math.sqrt(ab_prev) * z0 + math.sqrt(1 - ab_prev) * eps
    assert torch.allclose(ddim_step(z0, eps, ab_t, ab_prev), expected, atol=1e-6)


def test_ddim_step_eta_adds_ddpm_variance(gen: torch.Generator) -> None:
    z0 = torch.zeros(20000, 1, 1, 1)
    eps = torch.zeros_like(z0)
    ab_t, ab_prev = 0.2, 0.5
    out = ddim_step(z0, eps, ab_t, ab_prev, eta=1.0, generator=gen)
    expected_var = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
    assert float(out.var()) == pytest.approx(expected_var, rel=0.05)


def test_stochastic_resample_matches_formula(gen: torch.Generator) -> None:
    """Mean and variance of eq. (9) over many draws (4 standard errors / 5 % on the variance)."""
    n_draws = 40000
    z0_y = torch.full((n_draws, 1, 1, 1), 0.7)
    z_prime = torch.full((n_draws, 1, 1, 1), -1.3)
    gamma, ab_t, ab_prev = 40.0, 0.35, 0.45
    sigma_sq = gamma * (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
    assert resample_variance(gamma, ab_t, ab_prev) == pytest.approx(sigma_sq)
    mean = (sigma_sq * math.sqrt(ab_prev) * 0.7 + (1 - ab_prev) * -1.3) / (sigma_sq + 1 - ab_prev)
    var = sigma_sq * (1 - ab_prev) / (sigma_sq + 1 - ab_prev)
    draws = stochastic_resample(z0_y, z_prime, gamma=gamma, alpha_bar_t=ab_t, alpha_bar_prev=ab_prev, generator=gen)
    assert abs(float(draws.mean()) - mean) < 4 * math.sqrt(var / n_draws)
    assert float(draws.var()) == pytest.approx(var, rel=0.05)
    m, v = resample_moments(z0_y[:1], z_prime[:1], sigma_sq, ab_prev)
    assert float(m) == pytest.approx(mean) and v == pytest.approx(var)


def test_stochastic_encode_matches_forward_process(gen: torch.Generator) -> None:
    n_draws = 40000
    draws = stochastic_encode(torch.full((n_draws, 1, 1, 1), 2.0), alpha_bar_prev=0.25, generator=gen)
    assert abs(float(draws.mean()) - 1.0) < 4 * math.sqrt(0.75 / n_draws)
    assert float(draws.var()) == pytest.approx(0.75, rel=0.05)


def _official_kind(index: int, total: int) -> str:
    """The official code's rule (thirds, every 10th index, index > 0)."""
    split = total // 3
    if not (index <= total - split and index > 0 and index % 10 == 0):
        return "none"
    return "pixel" if index >= split else "latent"


@pytest.mark.parametrize("num_steps", [50, 100, 500])
def test_schedule_reproduces_official_rule(num_steps: int) -> None:
    config = ScheduleConfig()
    for step in range(num_steps):
        assert consistency_kind(step, num_steps, config) == _official_kind(num_steps - 1 - step, num_steps)


def test_schedule_fractions_and_time_travel() -> None:
    plans = plan_steps(20, ScheduleConfig(skip=1, fractions=(0.25, 0.5, 0.25), time_travel=3, dps_every_step=False))
    kinds = [p.consistency for p in plans]
    # index = 19 - step: none for index > 20 - 5, latent for 0 < index < 5, pixel between
    assert kinds[:4] == ["none"] * 4 and kinds[-1] == "none"
    assert set(kinds[4:15]) == {"pixel"} and set(kinds[15:19]) == {"latent"}
    assert plans[18].time_travel == 1 and plans[10].time_travel == 3 and not plans[0].dps
    with pytest.raises(ValueError, match="consistency schedule: fractions must be three non-negative shares"):
        ScheduleConfig(fractions=(0.5, 0.5, 0.5))


def test_cgls_matches_least_squares_and_stops_per_item(gen: torch.Generator) -> None:
    op = DenseOperator.random(4, (8, 4), gen)  # 32 x 16, overdetermined
    y = torch.randn(2, 1, 8, 4, generator=gen)
    x, trace = cgls_solve(op, y, torch.zeros(2, 1, 4, 4), max_iter=100)
    lstsq = torch.linalg.lstsq(op.matrix, y.flatten(1).T).solution.T.reshape(2, 1, 4, 4)
    assert torch.allclose(x, lstsq, atol=1e-4)
    threshold = torch.tensor([batch_sq_norm(y)[0] * 2.0, 0.0])  # item 0 already fits its level
    _, trace = cgls_solve(op, y, torch.zeros(2, 1, 4, 4), max_iter=100, threshold=threshold)
    assert trace.iterations[0] == 0 and trace.iterations[1] > 0


def test_discrepancy_threshold_scalar_and_tensor() -> None:
    y = torch.zeros(2, 1, 3, 5)
    assert torch.allclose(discrepancy_threshold(y, 0.5, 1.1), torch.full((2,), 1.1 * 15 * 0.25))
    std = torch.full((1, 1, 3, 5), 2.0)
    assert torch.allclose(discrepancy_threshold(y, std, 1.0), torch.full((2,), 60.0))
    assert discrepancy_threshold(y, None, 1.0) is None


def test_operator_norm_matches_svd(gen: torch.Generator) -> None:
    op = DenseOperator.random(4, (6, 4), gen)
    est = operator_norm(op, (1, 1, 4, 4), n_iter=200, generator=gen)
    assert est == pytest.approx(float(torch.linalg.matrix_norm(op.matrix, ord=2)), rel=1e-3)


class _TanhPrior(GaussianLatentPrior):
    """A non-linear decoder ``x = tanh(W z)`` to exercise the latent optimiser beyond linear maps."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(super().decode(z))


@pytest.mark.parametrize("optimizer", ["adamw", "adam"])
def test_latent_consistency_lowers_residual(gen: torch.Generator, optimizer: str) -> None:
    prior = _TanhPrior((1, 4, 4), 4, gen)
    op = DenseOperator.random(4, (2, 4), gen)
    y = op.forward(prior.decode(torch.randn(3, 1, 4, 4, generator=gen)))
    z0 = torch.randn(3, 1, 4, 4, generator=gen)
    before = batch_sq_norm(y - op.forward(prior.decode(z0)))
    cfg = LatentConsistencyConfig(optimizer=optimizer, lr=5e-2, max_iter=100)
    z, trace = latent_consistency(z0, y, op, prior.decode, cfg)
    after = batch_sq_norm(y - op.forward(prior.decode(z)))
    assert torch.all(after < 0.1 * before)
    assert torch.allclose(trace.residual_sq, after, rtol=1e-4)
    assert torch.all(trace.iterations == 100)


def test_latent_consistency_discrepancy_stop(gen: torch.Generator) -> None:
    prior = GaussianLatentPrior((1, 4, 4), 4, gen)
    op = DenseOperator.random(4, (2, 4), gen)
    y = torch.randn(2, 1, 2, 4, generator=gen)
    z0 = torch.randn(2, 1, 4, 4, generator=gen)
    start = batch_sq_norm(y - op.forward(prior.decode(z0)))
    threshold = start * torch.tensor([2.0, 0.5])  # item 0 is already below its level
    cfg = LatentConsistencyConfig(lr=5e-2, max_iter=200)
    z, trace = latent_consistency(z0, y, op, prior.decode, cfg, threshold)
    assert trace.iterations[0] == 0 and torch.equal(z[0], z0[0])
    assert 0 < trace.iterations[1] < 200 and trace.residual_sq[1] <= threshold[1]


@pytest.mark.parametrize("solver", ["cgls", "adamw"])
def test_pixel_consistency_lowers_residual(gen: torch.Generator, solver: str) -> None:
    prior = GaussianLatentPrior((1, 4, 4), 4, gen)
    op = DenseOperator.random(4, (2, 4), gen)
    y = op.forward(torch.randn(2, 1, 4, 4, generator=gen))
    z0 = torch.randn(2, 1, 4, 4, generator=gen)
    before = batch_sq_norm(y - op.forward(prior.decode(z0)))
    cfg = PixelConsistencyConfig(solver=solver, max_iter=300 if solver == "adamw" else 30, lr=1e-2, weight_decay=0.0)
    z, _ = pixel_consistency(z0, y, op, prior.decode, prior.encode, cfg)
    after = batch_sq_norm(y - op.forward(prior.decode(z)))
    assert torch.all(after < 0.05 * before)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_json_roundtrips(name: str) -> None:
    cfg = PRESETS[name]
    text = json.dumps(asdict(cfg))
    assert ReSampleConfig.from_dict(json.loads(text)) == cfg


def test_paper_preset_holds_official_defaults() -> None:
    paper = PRESETS["paper"]
    assert (paper.num_steps, paper.gamma, paper.schedule.skip, paper.schedule.time_travel) == (500, 40.0, 10, 5)
    assert paper.schedule.dps_every_step and paper.dps_scale == 0.5
    assert (paper.latent.optimizer, paper.latent.lr, paper.latent.max_iter) == ("adamw", 5e-3, 500)
    assert (paper.pixel.solver, paper.pixel.lr, paper.pixel.max_iter) == ("adamw", 1e-2, 2000)
    with pytest.raises(ValueError, match=r"ReSample config: gamma must be > 0, got 0"):
        ReSampleConfig(gamma=0.0)
