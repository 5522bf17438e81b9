"""Baselines behind the same call: FBP, CGLS, TV (PDHG) and Latent-DPS; the registry."""

from __future__ import annotations

import pytest
import torch

from resample_med.sampling import METHODS, ProgressEvent, ReconstructionCancelled, reconstruct
from resample_med.sampling.baselines.latent_dps import LatentDPSConfig
from resample_med.sampling.baselines.tv import TVConfig, image_gradient, image_gradient_adjoint, tv_pdhg
from resample_med.sampling.linalg import batch_dot, batch_sq_norm
from resample_med.sampling.testing import DenseOperator, GaussianLatentPrior


@pytest.fixture()
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(3)


def _blocky_phantom(size: int) -> torch.Tensor:
    """Piecewise-constant (B=2, 1, size, size) images in model units: TV's favourite."""
    x = torch.full((2, 1, size, size), -1.0)
    x[0, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 0.0
    x[1, :, size // 8 : size // 2, size // 3 : 7 * size // 8] = 0.5
    return x


def test_gradient_adjoint_dot_test(gen: torch.Generator) -> None:
    x = torch.randn(2, 1, 9, 7, generator=gen, dtype=torch.float64)
    g = torch.randn(2, 2, 9, 7, generator=gen, dtype=torch.float64)
    assert torch.allclose(batch_dot(image_gradient(x), g), batch_dot(x, image_gradient_adjoint(g)))


def test_tv_beats_least_squares_on_noisy_blocks(gen: torch.Generator) -> None:
    size = 12
    op = DenseOperator.random(size, (12, 12), gen)  # square system, noisy
    x_true = _blocky_phantom(size)
    y = op.forward(x_true) + 0.05 * torch.randn(2, 1, 12, 12, generator=gen)
    tv = reconstruct("tv", y, op, config=TVConfig(weight=2e-3, max_iter=400), generator=gen)
    ls = reconstruct("cgls", y, op, config="default")
    err = lambda x: batch_sq_norm(x - x_true).sqrt()
    assert tv.image.shape == x_true.shape and torch.all(tv.image >= -1.0)
    assert torch.all(err(tv.image) < 0.7 * err(ls.image))


def test_cgls_discrepancy_stop(gen: torch.Generator) -> None:
    op = DenseOperator.random(8, (8, 8), gen)
    y = op.forward(_blocky_phantom(8)) + 0.1 * torch.randn(2, 1, 8, 8, generator=gen)
    early = reconstruct("cgls", y, op, noise_std=0.1)
    full = reconstruct("cgls", y, op)
    assert max(early.info["iterations"]) < min(full.info["iterations"])
    assert all(
        r**2 * float(batch_sq_norm(y)[i]) <= 0.01 * 64 * 1.0001 for i, r in enumerate(early.info["relative_residual"])
    )


def test_fbp_uses_operator(gen: torch.Generator) -> None:
    op = DenseOperator.random(4, (4, 8), gen)
    x = torch.randn(2, 1, 4, 4, generator=gen)
    assert torch.allclose(reconstruct("fbp", op.forward(x), op).image, x, atol=1e-4)

    class NoFBP:
        forward, adjoint = op.forward, op.adjoint

    with pytest.raises(ValueError, match=r"operator NoFBP has no fbp\(y\) method"):
        reconstruct("fbp", op.forward(x), NoFBP())


def test_latent_dps_lowers_residual_and_is_seeded(gen: torch.Generator) -> None:
    prior = GaussianLatentPrior((1, 4, 4), 4, gen)
    op = DenseOperator.random(4, (2, 4), gen)
    y = op.forward(torch.randn(2, 1, 4, 4, generator=gen))
    cfg = LatentDPSConfig(num_steps=30, step_size=0.5, preview_every=10)
    unguided = reconstruct(
        "latent_dps",
        y,
        op,
        prior=prior,
        config=LatentDPSConfig(num_steps=30, step_size=0.0),
        generator=torch.Generator().manual_seed(0),
    )
    events: list[ProgressEvent] = []
    a = reconstruct(
        "latent_dps",
        y,
        op,
        prior=prior,
        config=cfg,
        generator=torch.Generator().manual_seed(0),
        n_samples=2,
        callback=events.append,
    )
    b = reconstruct(
        "latent_dps", y, op, prior=prior, config=cfg, generator=torch.Generator().manual_seed(0), n_samples=2
    )
    assert torch.equal(a.image, b.image) and a.std.shape == (2, 1, 4, 4)
    assert sum(a.info["relative_residual"]) < sum(unguided.info["relative_residual"])
    assert [e.step for e in events if e.preview is not None] == [10, 20, 30]

    def cancel(event: ProgressEvent) -> None:
        raise ReconstructionCancelled

    with pytest.raises(ReconstructionCancelled):
        reconstruct("latent_dps", y, op, prior=prior, config=cfg, callback=cancel)


def test_registry_errors_and_presets(gen: torch.Generator) -> None:
    op = DenseOperator.random(4, (2, 4), gen)
    y = torch.zeros(1, 1, 2, 4)
    assert set(METHODS) == {
        "fbp",
        "cgls",
        "tv",
        "latent_dps",
        "resample",
        "resample_no_resampling",
        "resample_stochastic_encoding",
    }
    with pytest.raises(ValueError, match="unknown method 'nope'; choose from"):
        reconstruct("nope", y, op)
    with pytest.raises(ValueError, match="needs a prior"):
        reconstruct("resample", y, op)
    with pytest.raises(ValueError, match="unknown tv preset"):
        reconstruct("tv", y, op, config="nope")
    for method in ("fbp", "cgls", "tv"):
        for preset in ("paper", "default", "fast"):
            assert reconstruct(method, y, op, config=preset).image.shape == (1, 1, 4, 4)


def test_anchored_tv_lies_between_tv_and_its_anchor(gen: torch.Generator) -> None:
    """``mu -> inf`` returns the anchor, ``mu = 0`` started from the anchor converges to plain TV
    (one convex minimiser), and a middle ``mu`` lands strictly between them."""
    size = 12
    op = DenseOperator.random(size, (12, 12), gen)
    x_true = _blocky_phantom(size)
    y = op.forward(x_true) + 0.05 * torch.randn(2, 1, 12, 12, generator=gen)
    config = TVConfig(weight=2e-3, max_iter=3000, report_every=0)
    plain = tv_pdhg(y, op, config, generator=gen).image
    anchor = x_true + 0.3 * torch.randn(x_true.shape, generator=gen)  # a different estimate, partly below -1
    clamped_anchor = anchor.clamp_min(-1.0)
    dist = lambda a, b: float((a - b).norm() / b.norm())
    held = tv_pdhg(y, op, config, generator=gen, anchor=anchor, anchor_weight=1e6).image
    assert dist(held, clamped_anchor) < 1e-3
    free = tv_pdhg(y, op, config, generator=gen, anchor=anchor, anchor_weight=0.0).image
    assert dist(free, plain) < 1e-2
    middle = tv_pdhg(y, op, config, generator=gen, anchor=anchor, anchor_weight=0.3).image
    assert 0.1 * dist(plain, clamped_anchor) < dist(middle, clamped_anchor) < 0.9 * dist(plain, clamped_anchor)
    with pytest.raises(ValueError, match="anchor_weight given without an anchor"):
        tv_pdhg(y, op, config, anchor_weight=0.1)
    with pytest.raises(ValueError, match="anchor_weight must be >= 0"):
        tv_pdhg(y, op, config, anchor=anchor, anchor_weight=-1.0)
