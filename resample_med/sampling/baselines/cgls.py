"""CGLS from zero, stopped by the discrepancy principle (or an iteration cap): the classic
iterative least-squares baseline, regularised by early stopping (semi-convergence)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from resample_med.sampling.linalg import batch_sq_norm, cgls_solve, discrepancy_threshold
from resample_med.sampling.prior import LinearOperator
from resample_med.sampling.result import ProgressCallback, ProgressEvent, Reconstruction, notify


@dataclass(frozen=True)
class CGLSConfig:
    """Attributes:
    max_iter: iteration cap (the only stop when the noise level is unknown).
    tau: discrepancy-principle factor: stop once ``||y - A x||^2 <= tau * sum sigma_i^2``."""

    max_iter: int = 30
    tau: float = 1.0


PRESETS: dict[str, CGLSConfig] = {"paper": CGLSConfig(), "default": CGLSConfig(), "fast": CGLSConfig()}


def cgls(
    y: Tensor,
    operator: LinearOperator,
    config: CGLSConfig,
    *,
    noise_std: float | Tensor | None = None,
    callback: ProgressCallback | None = None,
) -> Reconstruction:
    """``argmin_x ||y - A x||^2`` by CGLS from ``x = 0``: ``y (B, 1, V, D) -> x (B, 1, H, W)``."""
    with torch.no_grad():
        x0 = torch.zeros_like(operator.adjoint(y))
        x, trace = cgls_solve(
            operator, y, x0, max_iter=config.max_iter, threshold=discrepancy_threshold(y, noise_std, config.tau)
        )
    notify(callback, ProgressEvent("iterations", 1, 1, x))
    rel = (trace.residual_sq / batch_sq_norm(y).clamp_min(1e-30)).sqrt()
    return Reconstruction(
        image=x,
        info={
            "method": "cgls",
            "config": asdict(config),
            "iterations": trace.iterations.tolist(),
            "relative_residual": rel.tolist(),
        },
    )
