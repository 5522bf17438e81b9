"""benchmarks/prior_quality.py: the sampling spread that says how far its sample statistics move by chance,
and the tissue composition that says which tissue a prior under-draws."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture()
def prior_quality(benchmark_script):
    return benchmark_script("prior_quality")


def discs(n: int, seed: int) -> torch.Tensor:
    """(n, 1, 32, 32) HU: soft-tissue discs of random radius and density in air."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32) - 16.0, torch.arange(32) - 16.0, indexing="ij")
    radius = 6 + 8 * torch.rand(n, generator=g)
    density = -100 + 200 * torch.rand(n, generator=g)
    inside = (xx**2 + yy**2)[None] < radius[:, None, None] ** 2
    return torch.where(inside, density[:, None, None], torch.tensor(-1000.0))[:, None]


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # identical samples: a zero covariance, on purpose
def test_spread_is_zero_for_identical_samples_and_shrinks_with_more_samples(prior_quality) -> None:
    net, real = prior_quality.random_feature_net(), discs(40, seed=1)
    same = discs(1, seed=2).repeat(40, 1, 1, 1)
    spread = prior_quality.bootstrap_spread(same, real, net, seed=0)
    assert spread["w1_hu"] == 0.0
    assert spread["fd_random_features"] == pytest.approx(0.0, abs=1e-9)  # up to the matrix square root's rounding

    few, many = (prior_quality.bootstrap_spread(discs(n, seed=3), real, net, seed=0) for n in (10, 160))
    assert few["w1_hu"] > 0 and few["fd_random_features"] > 0
    # the standard error of a mean over n falls as n^-1/2: 16x the samples, about a quarter
    assert many["w1_hu"] < 0.5 * few["w1_hu"]
    assert many["fd_random_features"] < 0.5 * few["fd_random_features"]


def test_denoising_loss_is_the_training_objective_averaged_over_fixed_draws(prior_quality) -> None:
    from resample_med.models import create_bundle
    from resample_med.training.diffusion import validation_loss

    bundle = create_bundle("tiny", seed=0)
    images = (discs(6, seed=4) / 1000.0).float()  # model units
    with torch.no_grad():
        z0 = bundle.encode(images)
    one = prior_quality.denoising_loss(bundle, prior_quality.encode(bundle, images), draws=1)
    patch = bundle.config.architecture.unet.patch_size
    assert one["mean"] == pytest.approx(validation_loss(bundle.unet, bundle.scheduler, z0, 0, 5.0, 64, patch))
    assert one["stderr"] == 0.0
    four = prior_quality.denoising_loss(bundle, z0, draws=4)
    assert four["stderr"] > 0 and four == prior_quality.denoising_loss(bundle, z0, draws=4)


def test_denoising_loss_by_noise_band_draws_its_timesteps_within_the_band(prior_quality) -> None:
    from resample_med.models import create_bundle

    bundle = create_bundle("tiny", seed=0)
    z0 = prior_quality.encode(bundle, (discs(6, seed=4) / 1000.0).float())
    every_step = (0, bundle.scheduler.config.num_train_timesteps)
    assert prior_quality.denoising_loss(bundle, z0, draws=2, timesteps=every_step) == (
        prior_quality.denoising_loss(bundle, z0, draws=2)
    )
    low, high = (prior_quality.denoising_loss(bundle, z0, draws=2, timesteps=band) for band in [(0, 100), (600, 1000)])
    assert low["mean"] != pytest.approx(high["mean"], rel=1e-3)


def test_report_tabulates_the_loss_by_band_with_its_val_train_ratio(prior_quality) -> None:
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "prior_quality"
    report = json.loads((results / "prior_quality.json").read_text())
    loss = {"mean": 0.03, "stderr": 0.001}
    report["denoising_loss_by_band"] = {
        "[0, 100)": {"val": loss, "open train slices (floor row)": {"mean": 0.02, "stderr": 0.001}}
    }
    text = prior_quality.markdown(report)
    assert "| [0, 100) | 0.03000 +- 0.00100 | 0.02000 +- 0.00100 | 1.50 |" in text


def test_tissue_fractions_count_each_hu_range_over_the_whole_frame(prior_quality) -> None:
    # one 4x4 image: 8 air pixels, 1 lung, 1 fat, 2 soft tissue, 1 bone below 700 HU, 2 dense bone, 1 in no range
    hu = torch.tensor([-1000.0] * 8 + [-700.0, -100.0, 0.0, 99.0, 300.0, 700.0, 1500.0, 200.0]).reshape(1, 1, 4, 4)
    fractions = prior_quality.tissue_fractions(hu)
    assert fractions == pytest.approx(
        {"air": 50.0, "lung": 6.25, "fat": 6.25, "soft tissue": 12.5, "bone": 18.75, "dense bone": 12.5}
    )
    assert prior_quality.tissue_fractions(torch.cat([hu, hu])) == pytest.approx(fractions)  # a mean over images


def test_renoised_slices_are_keyed_by_the_sampling_timestep_and_barely_move_at_the_lowest(prior_quality) -> None:
    from resample_med.models import create_bundle

    bundle = create_bundle("tiny", seed=0)
    images = (discs(4, seed=5) / 1000.0).float()  # model units
    renoised = prior_quality.renoised_tissue_fractions(bundle, images, [1, 150, 999], steps=10, seed=0)
    assert list(renoised) == [1, 101, 901]  # 10 steps: timesteps 901, 801, ..., 1; each level snaps down
    with torch.no_grad():
        recon_hu = torch.cat([bundle.decode(bundle.encode(x)) for x in images.split(2)]) * 1000.0
    # from t = 1 one DDIM step with sqrt(1 - alpha_bar) = 0.01: the autoencoder's reconstruction, nearly
    assert renoised[1]["soft tissue"] == pytest.approx(prior_quality.tissue_fractions(recon_hu)["soft tissue"], abs=1.0)
    with pytest.raises(ValueError, match="--renoise-levels: 0 is below the first sampling timestep 1"):
        prior_quality.renoised_tissue_fractions(bundle, images, [0], steps=10, seed=0)


@pytest.mark.parametrize(("n", "size"), [(1, (32, 72)), (3, (32, 200)), (6, (32, 264)), (20, (128, 264))])
def test_samples_png_has_rows_of_four_or_one_short_row(
    prior_quality, tmp_path: Path, n: int, size: tuple[int, int]
) -> None:
    """Width: ncols 32-px images per side plus the 8-px gap; fewer than four samples make one row."""
    from PIL import Image

    path = prior_quality.side_by_side_png(discs(n, seed=5), discs(n, seed=6), tmp_path / "grid.png")
    assert Image.open(path).size[::-1] == size
