"""ReSample's levers on tiny doubles: the warm start (SDEdit-style, from FBP or TV), the final
fit's own discrepancy factor, the posterior mean and its anchored-TV refinement; off in a bare config (then exactly the plain
sampler), on in ``fast``."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from resample_med.sampling import ProgressEvent, reconstruct
from resample_med.sampling.baselines.tv import TVConfig
from resample_med.sampling.config import FAST, FAST_FROM_NOISE, ReSampleConfig
from resample_med.sampling.testing import DenseOperator, GaussianLatentPrior

IMAGE = 4
LATENT = (1, 4, 4)
SINOGRAM = (3, 4)
BASE = replace(FAST_FROM_NOISE, num_steps=12, preview_every=3)
"""``fast``'s sampler on a 12-step grid with every lever off."""


class CountingPrior(GaussianLatentPrior):
    """The Gaussian double, counting its noise-predictor calls and encodes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.network_calls = 0
        self.encodes = 0

    def predict_noise(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.network_calls += 1
        return super().predict_noise(z, t)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.encodes += 1
        return super().encode(x)


@pytest.fixture()
def problem() -> tuple[CountingPrior, DenseOperator, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    prior = CountingPrior(LATENT, IMAGE, g)
    op = DenseOperator.random(IMAGE, SINOGRAM, g)
    truth = torch.randn(2, 1, IMAGE, IMAGE, generator=g)
    return prior, op, op.forward(truth), truth


def _run(problem, config: ReSampleConfig, seed: int = 0, **kwargs):
    prior, op, y, _ = problem
    return reconstruct(
        "resample",
        y,
        op,
        prior=prior,
        config=config,
        noise_std=0.01,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def test_levers_are_off_by_default_and_old_configs_read_back_unchanged(problem) -> None:
    bare = ReSampleConfig()
    assert bare.warm_start == "none" and bare.warm_start_step == 0 and bare.final_tau is None
    assert bare.posterior_samples == 1 and bare.refine_tv_weight == 0
    old = BASE.to_dict()
    levers = (
        "warm_start",
        "warm_start_skip_fraction",
        "warm_start_tv_iterations",
        "final_tau",
        "posterior_samples",
        "refine_tv_weight",
        "refine_anchor_weight",
        "refine_iterations",
    )
    for key in levers:  # configs saved before the levers existed lack them
        del old[key]
    assert torch.equal(_run(problem, ReSampleConfig.from_dict(old)).image, _run(problem, BASE).image)


def test_the_warm_start_keeps_its_noise_level_when_the_step_count_changes() -> None:
    assert FAST.warm_start_step == 14 and FAST.num_steps == 20
    assert replace(FAST, num_steps=10).warm_start_step == 7
    assert replace(FAST, num_steps=50).warm_start_step == 35
    assert replace(FAST, num_steps=3).warm_start_step == 2 and replace(FAST, num_steps=1).warm_start_step == 0


def test_posterior_samples_is_the_default_count_and_an_explicit_count_wins(problem) -> None:
    prior = problem[0]
    four = _run(problem, replace(BASE, posterior_samples=4))
    assert four.info["n_samples"] == 4 and four.std is not None
    assert prior.network_calls == 12  # one call per step: the samples run as one batch
    assert torch.equal(four.image, _run(problem, BASE, n_samples=4).image)
    one = _run(problem, replace(BASE, posterior_samples=4), n_samples=1)
    assert one.info["n_samples"] == 1 and one.std is None


@pytest.mark.parametrize("kind", ["fbp", "tv"])
def test_warm_start_skips_steps_and_is_seeded(problem, kind: str) -> None:
    prior = problem[0]
    config = replace(BASE, warm_start=kind, warm_start_skip_fraction=7 / 12)
    events: list[ProgressEvent] = []
    a = _run(problem, config, callback=events.append, n_samples=2)
    assert prior.network_calls == 12 - 7  # only steps 7..11 run
    sampling = [e for e in events if e.stage == "sampling"]
    assert [e.step for e in sampling] == [1, 2, 3, 4, 5] and all(e.total == 5 for e in sampling)
    assert [e.step for e in sampling if e.preview is not None] == [3]
    b, c = _run(problem, config, n_samples=2), _run(problem, config, seed=1, n_samples=2)
    assert torch.equal(a.image, b.image) and not torch.allclose(a.image, c.image)
    assert a.std is not None and a.info["config"]["warm_start"] == kind
    assert not torch.allclose(a.image, _run(problem, BASE, n_samples=2).image)


def test_late_warm_start_stays_near_the_estimate_and_early_forgets_it(problem) -> None:
    """FBP here is the pseudo-inverse solution: started at the last step (little noise added) and
    without a final fit, the output is that estimate; started at step 0 (almost pure noise), not."""
    prior, op, y, _ = problem
    x_init = op.fbp(y)
    no_fit = replace(BASE, final_consistency="none", warm_start="fbp")
    late = _run(problem, replace(no_fit, warm_start_skip_fraction=11 / 12)).image
    early = _run(problem, replace(no_fit, warm_start_skip_fraction=0.0)).image
    assert float((late - x_init).norm() / x_init.norm()) < 0.1
    assert float((early - x_init).norm() / x_init.norm()) > 0.3
    assert prior.encodes >= 2  # the estimate is encoded once per run


def test_warm_start_from_tv_on_the_projector_and_the_tiny_model() -> None:
    """Through a real (tiny, untrained) autoencoder and UNet and the Joseph projector."""
    models = pytest.importorskip("resample_med.models")
    from resample_med.geometry import ParallelBeamGeometry
    from resample_med.operators import make_projector

    bundle = models.create_bundle("tiny", seed=0)
    projector = make_projector(ParallelBeamGeometry.sparse_view(8, image_size=bundle.image_size))
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, bundle.image_size), torch.linspace(-1, 1, bundle.image_size), indexing="ij"
    )
    y = projector.forward(((xx**2 + yy**2) < 0.5).float().reshape(1, 1, bundle.image_size, bundle.image_size) - 1.0)
    rec = reconstruct("resample", y, projector, prior=bundle, config=FAST)  # from TV at step 14, 2 samples
    assert rec.image.shape == (1, 1, bundle.image_size, bundle.image_size) and torch.isfinite(rec.image).all()
    assert rec.std is not None and rec.info["n_samples"] == 2


def test_final_tau_loosens_only_the_final_fit(problem) -> None:
    tight = _run(problem, BASE)
    loose = _run(problem, replace(BASE, final_tau=50.0))
    final = lambda rec: rec.info["consistency_steps"][-1]
    assert final(tight)["kind"] == final(loose)["kind"] == "final_pixel"
    assert sum(final(loose)["iterations"]) < sum(final(tight)["iterations"])
    assert tight.info["consistency_steps"][:-1] == loose.info["consistency_steps"][:-1]
    assert all(lo > ti for lo, ti in zip(loose.info["relative_residual"], tight.info["relative_residual"]))


def test_lever_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="warm_start_skip_fraction applies to a warm start only"):
        replace(BASE, warm_start_skip_fraction=0.3)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\), got 1.0"):
        replace(FAST, warm_start_skip_fraction=1.0)
    with pytest.raises(ValueError, match="posterior_samples must be >= 1"):
        replace(FAST, posterior_samples=0)
    with pytest.raises(ValueError, match="unknown warm_start 'cgls'"):
        replace(FAST, warm_start="cgls")
    with pytest.raises(ValueError, match="final_tau must be > 0"):
        replace(FAST, final_tau=0.0)
    with pytest.raises(ValueError, match="warm_start_tv_iterations must be >= 1"):
        replace(FAST, warm_start_tv_iterations=0)


def test_the_tv_start_runs_its_own_iteration_count(problem) -> None:
    config = replace(BASE, warm_start="tv", warm_start_skip_fraction=11 / 12, final_consistency="none")
    one = _run(problem, replace(config, warm_start_tv_iterations=1)).image
    many = _run(problem, replace(config, warm_start_tv_iterations=80)).image
    assert not torch.allclose(one, many)


def test_warm_start_from_fbp_needs_an_fbp(problem) -> None:
    prior, op, y, _ = problem

    class NoFBP:
        forward, adjoint = op.forward, op.adjoint

    with pytest.raises(ValueError, match="warm_start='fbp' needs an operator with fbp"):
        reconstruct(
            "resample", y, NoFBP(), prior=prior, config=replace(BASE, warm_start="fbp", warm_start_skip_fraction=0.25)
        )


def test_refinement_acts_on_the_mean_only_and_moves_it_towards_tv(problem) -> None:
    """The anchored-TV refinement changes the posterior mean, not the samples' std, and with a
    tiny anchor weight it lands near plain TV; off (weight 0) it is the plain sampler."""
    prior, op, y, _ = problem
    unrefined = _run(problem, BASE, n_samples=3)
    refined = _run(
        problem, replace(BASE, refine_tv_weight=1e-3, refine_anchor_weight=1e-4, refine_iterations=2000), n_samples=3
    )
    assert refined.std is not None and unrefined.std is not None and torch.equal(refined.std, unrefined.std)
    tv_image = reconstruct(
        "tv", y, op, config=TVConfig(weight=1e-3, max_iter=2000), generator=torch.Generator().manual_seed(0)
    ).image
    dist = lambda a: float((a - tv_image).norm() / tv_image.norm())
    assert dist(refined.image) < 0.2 * dist(unrefined.image)
    assert refined.info["config"]["refine_tv_weight"] == 1e-3
    with pytest.raises(ValueError, match="refine_tv_weight and refine_anchor_weight must be >= 0"):
        replace(BASE, refine_anchor_weight=-1.0)
    with pytest.raises(ValueError, match="refine_iterations must be >= 1"):
        replace(BASE, refine_iterations=0)
