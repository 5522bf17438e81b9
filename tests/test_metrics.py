"""Metrics: known values, agreement with scikit-image's SSIM, masks and windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resample_med import metrics


def _images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.uniform(-1000, 1000, size=(2, 64, 64)).astype(np.float32)
    noisy = ref + rng.normal(0, 50, size=ref.shape).astype(np.float32)
    return noisy, ref


def test_psnr_known_value() -> None:
    ref = np.zeros((32, 32), np.float32)
    recon = ref + 100.0  # windowed error 100 / 2000 = 0.05 everywhere
    assert float(metrics.psnr(recon, ref)) == pytest.approx(10 * np.log10(1 / 0.05**2), abs=1e-6)
    assert float(metrics.hu_rmse(recon, ref)) == pytest.approx(100.0)


def test_identical_images_are_perfect() -> None:
    _, ref = _images()
    assert np.allclose(metrics.ssim(ref, ref), 1.0)
    assert np.all(metrics.hu_rmse(ref, ref) == 0.0)
    assert metrics.psnr(ref, ref).shape == (2,)


def test_metrics_use_the_circle_only() -> None:
    ref = np.zeros((64, 64), np.float32)
    recon = ref.copy()
    recon[0, 0] = 1000.0  # a corner lies outside the circle, beyond SSIM's 11x11 window of it
    assert float(metrics.hu_rmse(recon, ref)) == 0.0
    assert float(metrics.ssim(recon, ref)) == pytest.approx(1.0, abs=1e-9)
    assert float(metrics.hu_rmse(recon, ref, mask=np.ones((64, 64), bool))) > 0


def test_ssim_matches_scikit_image_without_mask() -> None:
    skm = pytest.importorskip("skimage.metrics")
    noisy, ref = _images(1)
    a, b = metrics.window(noisy[0]).numpy(), metrics.window(ref[0]).numpy()
    expected = skm.structural_similarity(
        a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    ours = float(metrics.ssim(noisy[0], ref[0], mask=np.ones((64, 64), bool)))
    # skimage crops a 5-pixel border; reflect padding here changes the border only
    assert ours == pytest.approx(expected, abs=0.01)


def test_window_clips_and_torch_numpy_agree() -> None:
    noisy, ref = _images(2)
    assert np.allclose(metrics.psnr(torch.from_numpy(noisy), torch.from_numpy(ref)), metrics.psnr(noisy, ref))
    w = metrics.window(np.array([-3000.0, 0.0, 3000.0]))
    assert torch.allclose(w, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))


def test_relative_sinogram_residual() -> None:
    y = np.ones((3, 4, 5))
    assert np.allclose(metrics.relative_sinogram_residual(y * 1.1, y), 0.1)


def test_uncertainty_calibration_known_cases() -> None:
    rng = np.random.default_rng(3)
    ref = rng.uniform(-1000, 1000, size=(128, 128))
    std = np.exp(rng.normal(3.0, 0.7, size=ref.shape))  # spatially varying, 20 HU typical
    z = rng.normal(size=ref.shape)
    stack = lambda *errors: (np.stack([std] * len(errors)), np.stack([ref + e for e in errors]))
    std_s, recon = stack(1.5 * std, -3.0 * std, std * z, 20.0 * rng.normal(size=ref.shape))
    rho, coverage = metrics.uncertainty_calibration(std_s, recon, np.stack([ref] * 4))
    assert rho.shape == coverage.shape == (4,)
    # |error| = 1.5 std: perfectly ranked, always inside the +-2 std band; 3 std: never inside
    assert rho[0] == pytest.approx(1.0) and coverage[0] == 1.0
    assert rho[1] == pytest.approx(1.0) and coverage[1] == 0.0
    # calibrated Gaussian errors: P(|Z| <= 2) = 0.9545, and the map ranks the errors (rho > 0)
    assert coverage[2] == pytest.approx(0.9545, abs=0.01) and rho[2] > 0.3
    # errors unrelated to the map: no rank correlation
    assert abs(rho[3]) < 0.05


def test_uncertainty_calibration_mask_and_degenerate_map() -> None:
    ref = np.zeros((32, 32))
    recon = ref.copy()
    recon[0, 0] = 500.0  # outside the circle: ignored
    std = np.full((32, 32), 10.0)
    rho, coverage = metrics.uncertainty_calibration(std, recon, ref)
    assert np.isnan(rho) and coverage == 1.0  # a constant map ranks nothing
    rho, coverage = metrics.uncertainty_calibration(std, recon, ref, mask=np.ones((32, 32), bool))
    assert coverage == pytest.approx(1 - 1 / 1024)
    with pytest.raises(ValueError, match="one shape"):
        metrics.uncertainty_calibration(std[:16], recon, ref)
