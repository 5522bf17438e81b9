"""ReSample end to end on tiny priors: shapes, seeds, progress/cancel, the `paper` preset at 50
and 500 steps, the ablations, and the Gaussian-prior case whose posterior is known exactly."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from resample_med.sampling import PRESETS, ProgressEvent, ReconstructionCancelled, reconstruct
from resample_med.sampling.config import ReSampleConfig
from resample_med.sampling.consistency import LatentConsistencyConfig, PixelConsistencyConfig
from resample_med.sampling.linalg import batch_sq_norm
from resample_med.sampling.schedule import ScheduleConfig
from resample_med.sampling.testing import DenseOperator, GaussianLatentPrior

IMAGE = 4
LATENT = (1, 4, 4)
SINOGRAM = (2, 4)  # 8 measurements of a 16-pixel image: underdetermined

TINY_CONFIG = ReSampleConfig(
    num_steps=12,
    schedule=ScheduleConfig(skip=2, fractions=(0.25, 0.5, 0.25), time_travel=1, dps_every_step=True),
    pixel=PixelConsistencyConfig(solver="cgls", max_iter=10),
    latent=LatentConsistencyConfig(lr=1e-2, max_iter=10),
    final_max_iter=10,
    preview_every=3,
)


@pytest.fixture()
def problem() -> tuple[GaussianLatentPrior, DenseOperator, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    prior = GaussianLatentPrior(LATENT, IMAGE, g)
    op = DenseOperator.random(IMAGE, SINOGRAM, g)
    y = op.forward(torch.randn(2, 1, IMAGE, IMAGE, generator=g))
    return prior, op, y


@pytest.mark.parametrize("method", ["resample", "resample_no_resampling", "resample_stochastic_encoding"])
def test_shapes_dtypes_and_seed(problem, method: str) -> None:
    prior, op, y = problem
    run = lambda seed: reconstruct(
        method, y, op, prior=prior, config=TINY_CONFIG, n_samples=3, generator=torch.Generator().manual_seed(seed)
    )
    a, b, c = run(0), run(0), run(1)
    assert a.image.shape == (2, 1, IMAGE, IMAGE) and a.image.dtype == torch.float32
    assert a.std is not None and a.std.shape == a.image.shape and torch.all(a.std >= 0)
    assert torch.equal(a.image, b.image) and torch.equal(a.std, b.std)
    assert not torch.allclose(a.image, c.image)
    assert a.info["method"] == method and len(a.info["relative_residual"]) == 2
    assert {r["kind"] for r in a.info["consistency_steps"]} == {"pixel", "latent", "final_latent"}


def test_ablations_differ_from_resample(problem) -> None:
    prior, op, y = problem
    images = {
        m: reconstruct(m, y, op, prior=prior, config=TINY_CONFIG, generator=torch.Generator().manual_seed(0)).image
        for m in ("resample", "resample_no_resampling", "resample_stochastic_encoding")
    }
    assert not torch.allclose(images["resample"], images["resample_no_resampling"])
    assert not torch.allclose(images["resample"], images["resample_stochastic_encoding"])


def test_single_sample_has_no_std(problem) -> None:
    prior, op, y = problem
    rec = reconstruct("resample", y, op, prior=prior, config=TINY_CONFIG)
    assert rec.std is None


def test_final_consistency_lowers_residual(problem) -> None:
    prior, op, y = problem
    no_final = reconstruct("resample", y, op, prior=prior, config=replace(TINY_CONFIG, final_consistency="none"))
    final = reconstruct("resample", y, op, prior=prior, config=replace(TINY_CONFIG, final_consistency="pixel"))
    assert all(f < n for f, n in zip(final.info["relative_residual"], no_final.info["relative_residual"]))


def test_progress_previews_and_cancel(problem) -> None:
    prior, op, y = problem
    events: list[ProgressEvent] = []
    reconstruct("resample", y, op, prior=prior, config=TINY_CONFIG, callback=events.append)
    sampling = [e for e in events if e.stage == "sampling"]
    assert [e.step for e in sampling] == list(range(1, 13)) and all(e.total == 12 for e in sampling)
    previews = [e for e in sampling if e.preview is not None]
    assert [e.step for e in previews] == [3, 6, 9, 12] and previews[0].preview.shape == (2, 1, IMAGE, IMAGE)
    assert events[-1].stage == "final_consistency"

    seen: list[int] = []

    def cancel_at_five(event: ProgressEvent) -> None:
        seen.append(event.step)
        if event.step == 5:
            raise ReconstructionCancelled("user pressed cancel")

    with pytest.raises(ReconstructionCancelled):
        reconstruct("resample", y, op, prior=prior, config=TINY_CONFIG, callback=cancel_at_five)
    assert seen == [1, 2, 3, 4, 5]


def test_discrepancy_stop_uses_noise_level(problem) -> None:
    prior, op, y = problem
    loose = reconstruct("resample", y, op, prior=prior, config=TINY_CONFIG, noise_std=10.0)
    iterations = [sum(r["iterations"]) for r in loose.info["consistency_steps"]]
    assert iterations == [0] * len(iterations)  # every start already fits a huge noise level
    tight = reconstruct("resample", y, op, prior=prior, config=TINY_CONFIG, noise_std=1e-6)
    assert sum(sum(r["iterations"]) for r in tight.info["consistency_steps"]) > 0


def _exact_posterior(op: DenseOperator, y: torch.Tensor, noise_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and covariance of x ~ N(0, I) given y = M x + N(0, s^2 I); s = 0: the limit."""
    m = op.matrix.double()
    yv = y.flatten().double()
    if noise_std == 0.0:
        pinv = torch.linalg.pinv(m)
        return pinv @ yv, torch.eye(m.shape[1], dtype=torch.float64) - pinv @ m
    cov = torch.linalg.inv(torch.eye(m.shape[1], dtype=torch.float64) + m.T @ m / noise_std**2)
    return cov @ m.T @ yv / noise_std**2, cov


GAUSSIAN_CONFIG = ReSampleConfig(
    num_steps=50,
    gamma=40.0,
    schedule=ScheduleConfig(skip=1, fractions=(0.0, 1.0, 0.0), time_travel=0, dps_every_step=False),
    pixel=PixelConsistencyConfig(solver="cgls", max_iter=100),
    final_consistency="pixel",
)


@pytest.mark.slow
@pytest.mark.parametrize("noise_std, mean_tol", [(0.0, 0.03), (0.3, 0.10)])
def test_gaussian_prior_posterior(noise_std: float, mean_tol: float) -> None:
    """x = W z (W orthogonal), z ~ N(0, I), y = M x + n with the exact eps predictor.

    Stated tolerances: the posterior mean within ``mean_tol`` relative error (3 % noiseless,
    10 % at noise 0.3 where the discrepancy stop halts the fits early). ReSample is not an exact
    posterior sampler: it resamples around Tweedie's *mean* ``z0_hat`` whose null-space part has
    variance ``ab_t`` rather than 1, so its spread is known to be too small; we check the total
    variance lies in [0.3, 1.0] of the exact one (0.45 measured), and, noiseless, that every
    sample is data-consistent (relative sinogram residual below 1e-3).
    """
    g = torch.Generator().manual_seed(1)
    prior = GaussianLatentPrior(LATENT, IMAGE, g)
    op = DenseOperator.random(IMAGE, SINOGRAM, g)
    y = op.forward(torch.randn(1, 1, IMAGE, IMAGE, generator=g))
    y = y + noise_std * torch.randn(y.shape, generator=g)
    mean, cov = _exact_posterior(op, y, noise_std)
    rec = reconstruct(
        "resample",
        y,
        op,
        prior=prior,
        config=GAUSSIAN_CONFIG,
        n_samples=2000,
        noise_std=noise_std or None,
        generator=torch.Generator().manual_seed(0),
    )
    got_mean = rec.image.flatten().double()
    assert float((got_mean - mean).norm() / mean.norm()) < mean_tol
    var_ratio = float(rec.std.double().pow(2).sum() / cov.diagonal().sum())
    assert 0.3 < var_ratio < 1.0
    if noise_std == 0.0:  # every sample fits y: all of the spread lies in null(M)
        final = rec.info["consistency_steps"][-1]
        assert final["kind"] == "final_pixel" and max(final["relative_residual"]) < 1e-3


@pytest.fixture(scope="module")
def tiny_bundle_problem():
    models = pytest.importorskip("resample_med.models")
    geometry = pytest.importorskip("resample_med.geometry")
    operators = pytest.importorskip("resample_med.operators")
    bundle = models.create_bundle("tiny", seed=0)
    size = bundle.image_size
    projector = operators.make_projector(geometry.ParallelBeamGeometry.sparse_view(8, image_size=size))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    phantom = ((xx**2 + yy**2) < 0.5).float().reshape(1, 1, size, size) - 1.0
    return bundle, projector, projector.forward(phantom)


def _paper_with_small_caps(num_steps: int) -> ReSampleConfig:
    """The `paper` preset at ``num_steps`` with its iteration caps cut so that tests stay short
    (the schedule, time travel and DPS step are what is exercised)."""
    paper = PRESETS["paper"]
    return replace(
        paper,
        num_steps=num_steps,
        pixel=replace(paper.pixel, max_iter=3),
        latent=replace(paper.latent, max_iter=2),
        final_max_iter=3,
    )


def _official_dc_count(num_steps: int) -> int:
    return len([i for i in range(1, num_steps) if i % 10 == 0 and i <= num_steps - num_steps // 3])


@pytest.mark.parametrize("num_steps", [50, 500])
def test_paper_preset_runs_at_50_and_500_steps(problem, num_steps: int) -> None:
    """On the Gaussian double (no network, so 500 steps take a second)."""
    prior, op, y = problem
    rec = reconstruct("resample", y, op, prior=prior, config=_paper_with_small_caps(num_steps))
    assert rec.image.shape == (2, 1, IMAGE, IMAGE) and torch.isfinite(rec.image).all()
    n_dc = len([r for r in rec.info["consistency_steps"] if not r["kind"].startswith("final")])
    assert n_dc == _official_dc_count(num_steps)


@pytest.mark.slow
def test_paper_preset_runs_on_tiny_model(tiny_bundle_problem) -> None:
    """The `paper` preset at 50 steps through a real (tiny, untrained) diffusers UNet and
    autoencoder and the Joseph projector, DPS gradients through both networks included."""
    bundle, projector, y = tiny_bundle_problem
    rec = reconstruct("resample", y, projector, prior=bundle, config=_paper_with_small_caps(50))
    assert rec.image.shape == (1, 1, bundle.image_size, bundle.image_size)
    assert torch.isfinite(rec.image).all()
    n_dc = len([r for r in rec.info["consistency_steps"] if not r["kind"].startswith("final")])
    assert n_dc == _official_dc_count(50)


def test_fast_preset_on_tiny_model_lowers_residual(tiny_bundle_problem) -> None:
    bundle, projector, y = tiny_bundle_problem
    rec = reconstruct("resample", y, projector, prior=bundle, config="fast", n_samples=2)
    with torch.no_grad():
        start = batch_sq_norm(y - projector.forward(bundle.decode(torch.zeros(1, *bundle.latent_shape))))
    assert rec.info["relative_residual"][0] ** 2 * float(batch_sq_norm(y)) < float(start)
    assert rec.std is not None
