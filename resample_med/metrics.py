"""Image-quality and data-fit metrics for CT reconstructions.

All image metrics take HU images ``(..., H, W)`` (numpy or torch) and return one value per
leading item as a numpy array of shape ``(...)``. They are computed inside the reconstruction
circle (the disc inscribed in the square grid, where every method sees data) unless a mask is
given.

* Windowed images: ``w(hu) = clip((hu - lo) / (hi - lo), 0, 1)``, default window [-1000, 1000] HU.
* PSNR: ``10 log10(1 / MSE)`` of windowed images over the mask (data range 1).
* SSIM (Wang et al. 2004, IEEE TIP 13(4)): on windowed images with an 11x11 Gaussian window
  (sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``, ``L = 1``;
  ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
  with ``C_i = (K_i L)^2``, local statistics by Gaussian filtering (reflect padding),
  averaged over mask pixels.
* HU-RMSE: root mean squared HU difference over the mask (no window).
* Relative sinogram residual: ``||A x - y|| / ||y||`` per item.
* Uncertainty calibration of a posterior std map ``s`` for an estimate ``x`` of ``x_ref`` (HU):
  the Spearman rank correlation between ``s`` and ``|x - x_ref|`` over the mask's pixels (does
  the map point at the errors?) and the coverage ``mean(|x - x_ref| <= k s)`` of the ``+-k s``
  band (``k = 2``: 95.4 % for calibrated Gaussian errors).
"""

from __future__ import annotations

import numpy as np
import scipy.stats
import torch
from torch import Tensor
from torch.nn import functional as F

DEFAULT_WINDOW_HU: tuple[float, float] = (-1000.0, 1000.0)
"""HU window mapped to [0, 1] for PSNR and SSIM."""
SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
COVERAGE_STDS = 2.0
"""Half-width of the uncertainty band, in posterior standard deviations, whose coverage is reported."""

ArrayLike = np.ndarray | Tensor


def _as_tensor(a: ArrayLike) -> Tensor:
    return (torch.from_numpy(np.asarray(a)) if not isinstance(a, Tensor) else a.detach()).to(torch.float64).cpu()


def circle_mask(height: int, width: int) -> Tensor:
    """Boolean ``(H, W)`` mask of the disc inscribed in the grid (pixel centres within radius ``min(H, W)/2``)."""
    yy = torch.arange(height, dtype=torch.float64) - (height - 1) / 2
    xx = torch.arange(width, dtype=torch.float64) - (width - 1) / 2
    return (yy[:, None] ** 2 + xx[None, :] ** 2) <= (min(height, width) / 2) ** 2


def window(hu: ArrayLike, window_hu: tuple[float, float] = DEFAULT_WINDOW_HU) -> Tensor:
    """HU -> ``clip((hu - lo) / (hi - lo), 0, 1)`` as float64 torch, same shape."""
    lo, hi = window_hu
    return ((_as_tensor(hu) - lo) / (hi - lo)).clamp(0.0, 1.0)


def _flat_items(x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    lead = tuple(x.shape[:-2])
    return x.reshape(-1, 1, *x.shape[-2:]), lead


def _mask_for(x: Tensor, mask: ArrayLike | None) -> Tensor:
    return circle_mask(*x.shape[-2:]) if mask is None else _as_tensor(mask).bool()


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values (N, 1, H, W)`` over ``mask (H, W)`` -> ``(N,)``."""
    m = mask.to(values.dtype)
    return (values * m).flatten(1).sum(1) / m.sum()


def psnr(
    recon_hu: ArrayLike,
    ref_hu: ArrayLike,
    *,
    window_hu: tuple[float, float] = DEFAULT_WINDOW_HU,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """PSNR in dB of windowed images inside ``mask`` (default: the reconstruction circle)."""
    a, lead = _flat_items(window(recon_hu, window_hu))
    b, _ = _flat_items(window(ref_hu, window_hu))
    mse = _masked_mean((a - b) ** 2, _mask_for(a, mask)).clamp_min(1e-20)
    return (10.0 * torch.log10(1.0 / mse)).reshape(lead).numpy()


def _gaussian_kernel(size: int, sigma: float) -> Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).reshape(1, 1, size, size)


def ssim_map(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Wang et al. (2004) SSIM map of ``(N, 1, H, W)`` images (see the module docstring)."""
    kernel = _gaussian_kernel(SSIM_WINDOW_SIZE, SSIM_SIGMA)
    pad = SSIM_WINDOW_SIZE // 2

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), kernel)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim(
    recon_hu: ArrayLike,
    ref_hu: ArrayLike,
    *,
    window_hu: tuple[float, float] = DEFAULT_WINDOW_HU,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Mean SSIM of windowed images over ``mask`` (default: the reconstruction circle)."""
    a, lead = _flat_items(window(recon_hu, window_hu))
    b, _ = _flat_items(window(ref_hu, window_hu))
    return _masked_mean(ssim_map(a, b), _mask_for(a, mask)).reshape(lead).numpy()


def hu_rmse(recon_hu: ArrayLike, ref_hu: ArrayLike, *, mask: ArrayLike | None = None) -> np.ndarray:
    """Root mean squared error in HU inside ``mask`` (default: the reconstruction circle)."""
    a, lead = _flat_items(_as_tensor(recon_hu))
    b, _ = _flat_items(_as_tensor(ref_hu))
    return _masked_mean((a - b) ** 2, _mask_for(a, mask)).sqrt().reshape(lead).numpy()


def relative_sinogram_residual(predicted: ArrayLike, measured: ArrayLike) -> np.ndarray:
    """``||A x - y|| / ||y||`` per item over the last two (view, detector) dims: ``(..., V, D) -> (...)``."""
    p, lead = _flat_items(_as_tensor(predicted))
    m, _ = _flat_items(_as_tensor(measured))
    return ((p - m).flatten(1).norm(dim=1) / m.flatten(1).norm(dim=1).clamp_min(1e-30)).reshape(lead).numpy()


def uncertainty_calibration(
    std_hu: ArrayLike,
    recon_hu: ArrayLike,
    ref_hu: ArrayLike,
    *,
    k: float = COVERAGE_STDS,
    mask: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """How well a per-pixel posterior std predicts the error of the estimate (module docstring).

    Args:
        std_hu: ``(..., H, W)`` posterior standard deviation in HU.
        recon_hu: ``(..., H, W)`` the estimate (e.g. the posterior mean) in HU.
        ref_hu: ``(..., H, W)`` ground truth in HU.
        k: band half-width in standard deviations.
        mask: pixels to use (default: the reconstruction circle).

    Returns:
        ``(spearman, coverage)``, each of shape ``(...)``: the rank correlation of ``std`` with
        ``|recon - ref|`` (ties get average ranks; NaN when either is constant over the mask) and
        the fraction of pixels with ``|recon - ref| <= k std``.
    """
    s, lead = _flat_items(_as_tensor(std_hu))
    a, _ = _flat_items(_as_tensor(recon_hu))
    b, _ = _flat_items(_as_tensor(ref_hu))
    if not s.shape == a.shape == b.shape:
        raise ValueError(
            f"std, estimate and reference must have one shape, got {tuple(std_hu.shape)}, "
            f"{tuple(recon_hu.shape)} and {tuple(ref_hu.shape)}"
        )
    inside = _mask_for(s, mask)
    error = (a - b).abs()
    spearman, coverage = [], []
    for std_item, err_item in zip(s[:, 0], error[:, 0]):
        std_px, err_px = std_item[inside].numpy(), err_item[inside].numpy()
        constant = np.ptp(std_px) == 0 or np.ptp(err_px) == 0
        spearman.append(np.nan if constant else float(scipy.stats.spearmanr(std_px, err_px).statistic))
        coverage.append(float(np.mean(err_px <= k * std_px)))
    return np.asarray(spearman).reshape(lead), np.asarray(coverage).reshape(lead)
