"""benchmarks/volume.py: the z-consistency metric, the reformat scores and the report, on synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture()
def volume_benchmark(benchmark_script):
    return benchmark_script("volume")


def phantom(n: int = 12, size: int = 32) -> np.ndarray:
    """``(n, size, size)`` HU: a water disc in air whose radius grows along z."""
    yy, xx = np.mgrid[:size, :size] - size / 2
    return np.stack([np.where(xx**2 + yy**2 < (6 + k / 2) ** 2, 40.0, -1000.0) for k in range(n)]).astype(np.float32)


def test_z_derivative_rmse_sees_flicker_not_a_constant_offset(volume_benchmark) -> None:
    truth = phantom()
    assert volume_benchmark.z_derivative_rmse(truth + 50.0, truth, slice_mm=2.0) == 0.0
    flicker = truth.copy()
    flicker[5] += 60.0  # one slice off: two z steps of +-60 HU over 2 mm, the rest exact
    inside = volume_benchmark.metrics.circle_mask(32, 32).numpy()
    expected = np.sqrt(2 * 30.0**2 * inside.sum() / (11 * inside.sum()))
    assert volume_benchmark.z_derivative_rmse(flicker, truth, slice_mm=2.0) == pytest.approx(expected)


def test_reformat_scores_fall_with_z_flicker(volume_benchmark) -> None:
    truth = phantom()
    rng = np.random.default_rng(0)
    smooth = truth + rng.normal(0, 10, truth.shape).astype(np.float32)
    flicker = smooth + rng.choice([-80.0, 80.0], size=(truth.shape[0], 1, 1)).astype(np.float32)
    calm, jumpy = (volume_benchmark.reformat_scores(v, truth) for v in (smooth, flicker))
    for name in ("coronal", "sagittal"):
        assert jumpy[f"{name}_psnr"] < calm[f"{name}_psnr"] - 5
        assert jumpy[f"{name}_ssim"] < calm[f"{name}_ssim"]


def test_report_lists_each_setting_and_the_gain_of_volume_mode(volume_benchmark, tmp_path) -> None:
    args = volume_benchmark.build_parser().parse_args(["--out", str(tmp_path / "volume.md")])
    args.image_size = 32
    base = {"spacing": 1, "setting": "parallel:20", "slices": [16, 17], "slice_mm": 1.0, "z_weight": None}
    metrics = ("axial_psnr", "axial_ssim", "coronal_psnr", "coronal_ssim", "sagittal_psnr", "sagittal_ssim")
    records = [
        {**base, "method": "resample", "mode": "slice", "seconds_per_slice": 5.0, "z_derivative_rmse": 60.0}
        | dict.fromkeys(metrics, 25.0),
        {**base, "method": "resample", "mode": "volume", "seconds_per_slice": 6.0, "z_derivative_rmse": 45.0}
        | dict.fromkeys(metrics, 25.5),
    ]
    volume_benchmark.write_report(records, args)
    report = (tmp_path / "volume.md").read_text()
    assert "## parallel, 20 views, slice spacing 1 mm (2 slices: 16..17 step 1)" in report
    assert "| 1 mm | parallel:20 | resample | +0.50 | +0.50 | +0.50 | -25% | 1.20x |" in report
    assert "`RESAMPLE_Z_WEIGHT` = " in report and "`TV_Z_WEIGHT` = " in report
