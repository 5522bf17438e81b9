"""Validation hooks: autoencoder reconstruction quality on held-out slices, the HU distribution
distance of samples to real slices, sample grid images.

PSNR is computed in the HU window ``[lo, hi]`` mapped to [0, 1] (both images clipped to it):
``PSNR = 10 log10(1 / MSE)``, averaged over slices. HU-RMSE is over all pixels, unclipped.
W1 is the Wasserstein-1 distance between the HU value distributions of two image sets,
``W1 = integral |F_a(h) - F_b(h)| dh`` over ``HU_CLIP`` from ``HIST_BIN_HU``-wide histogram bins.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from resample_med.models.config import DISPLAY_WINDOW_HU, HU_CLIP
from resample_med.units import model_to_hu

HIST_BIN_HU = 4.0


def window01(hu: torch.Tensor, window: tuple[float, float] = DISPLAY_WINDOW_HU) -> torch.Tensor:
    """HU -> [0, 1] in ``window`` (clipped); any shape."""
    lo, hi = window
    return ((hu - lo) / (hi - lo)).clamp(0.0, 1.0)


def hu_histogram(hu: torch.Tensor) -> np.ndarray:
    """Normalised histogram of the HU values of any-shape ``hu`` over HU_CLIP in HIST_BIN_HU bins."""
    lo, hi = HU_CLIP
    bins = int((hi - lo) / HIST_BIN_HU)
    h = torch.histc(hu.clamp(lo, hi).flatten().float(), bins=bins, min=lo, max=hi).numpy()
    return h / h.sum()


def wasserstein1_hu(a: torch.Tensor, b: torch.Tensor) -> float:
    """W1 (module docstring) between the HU value distributions of two image sets, in HU."""
    return float(np.abs(np.cumsum(hu_histogram(a)) - np.cumsum(hu_histogram(b))).sum() * HIST_BIN_HU)


def windowed_psnr(
    hu_pred: torch.Tensor, hu_true: torch.Tensor, window: tuple[float, float] = DISPLAY_WINDOW_HU
) -> torch.Tensor:
    """Per-slice PSNR in dB of (B, ..., H, W) HU images in ``window`` -> (B,)."""
    err = (window01(hu_pred, window) - window01(hu_true, window)).flatten(1).pow(2).mean(1)
    return 10.0 * torch.log10(1.0 / err.clamp_min(1e-12))


def unmasked_hu_rmse(hu_pred: torch.Tensor, hu_true: torch.Tensor) -> torch.Tensor:
    """Per-slice RMSE in HU over the whole (B, ..., H, W) images -> (B,) (training validation;
    :func:`resample_med.metrics.hu_rmse` is the reconstruction metric, inside the reconstruction circle)."""
    return (hu_pred - hu_true).flatten(1).pow(2).mean(1).sqrt()


@torch.no_grad()
def autoencoder_metrics(
    reconstruct: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 8
) -> dict[str, float]:
    """Mean PSNR (window [-1000, 1000] HU) and HU-RMSE of ``reconstruct`` over slices ``x`` (N,1,H,W).

    ``reconstruct`` maps model units to model units on the device of its own choosing; ``x`` is
    moved in batches.
    """
    psnr, rmse = [], []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size]
        rec = reconstruct(xb).float().cpu()
        psnr.append(windowed_psnr(model_to_hu(rec), model_to_hu(xb)))
        rmse.append(unmasked_hu_rmse(model_to_hu(rec), model_to_hu(xb)))
    return {
        "psnr_db": float(torch.cat(psnr).mean()),
        "hu_rmse": float(torch.cat(rmse).mean()),
        "n_slices": int(x.shape[0]),
    }


def save_grid_png(
    hu: torch.Tensor | np.ndarray,
    path: str | Path,
    ncols: int = 4,
    window: tuple[float, float] = DISPLAY_WINDOW_HU,
) -> Path:
    """Tile (N, H, W) or (N, 1, H, W) HU images into one 8-bit PNG in ``window``."""
    from PIL import Image  # lazy: only for figures

    t = torch.as_tensor(hu).float()
    if t.ndim == 4:
        t = t[:, 0]
    n, h, w = t.shape
    nrows = -(-n // ncols)
    canvas = torch.zeros(nrows * h, ncols * w)
    for k in range(n):
        r, c = divmod(k, ncols)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = window01(t[k], window)
    path = Path(path)
    Image.fromarray((canvas.numpy() * 255.0 + 0.5).astype(np.uint8)).save(path)
    return path
