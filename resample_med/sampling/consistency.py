"""Hard data consistency: the two optimisation problems of ReSample (Sec. 3.1).

* :func:`latent_consistency` solves ``z0_y = argmin_z ||y - A D(z)||^2`` (eq. 7) from ``z0_hat``.
* :func:`pixel_consistency` solves ``x* = argmin_x ||y - A x||^2`` (eq. 8) from ``D(z0_hat)``
  and returns ``z0_y = E(x*)``.

Both stop per item by the discrepancy principle ``||y - A x||^2 <= tau * sum sigma_i^2`` when
the noise level is known (the official code stops at a fixed 1e-6 loss, which over-fits noise).

In volume mode (``z_scale > 0``) both problems gain the penalty ``z_scale ||D_z x||^2`` on the
differences of z-adjacent slices of the batch (:mod:`~resample_med.sampling.zcoupling`), so the
slices are fitted jointly; ``z_scale = 0`` is slice mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from resample_med.sampling.linalg import SolverTrace, batch_sq_norm, expand_batch
from resample_med.sampling.prior import LinearOperator
from resample_med.sampling.zcoupling import z_coupled_cgls, z_difference

Decoder = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class LatentConsistencyConfig:
    """Latent-space consistency (eq. 7) by a first-order optimiser on ``z``.

    Attributes:
        optimizer: ``"adamw"`` (official) or ``"adam"``.
        lr: learning rate (official 5e-3).
        max_iter: iteration cap (official 500).
        weight_decay: AdamW's decoupled weight decay (PyTorch default 0.01, as the official code).
        tau: discrepancy-principle safety factor.
    """

    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = 5e-3
    max_iter: int = 500
    weight_decay: float = 0.01
    tau: float = 1.0


@dataclass(frozen=True)
class PixelConsistencyConfig:
    """Pixel-space consistency (eq. 8).

    Attributes:
        solver: ``"cgls"`` (exact adjoint, fast) or ``"adamw"`` (the official code: AdamW on the
            mean squared residual).
        max_iter: iteration cap (official 2000 AdamW steps).
        lr: AdamW learning rate (official 1e-2); unused by CGLS.
        weight_decay: AdamW weight decay (PyTorch default 0.01, as the official code).
        tau: discrepancy-principle safety factor.
    """

    solver: Literal["cgls", "adamw"] = "cgls"
    max_iter: int = 50
    lr: float = 1e-2
    weight_decay: float = 0.01
    tau: float = 1.0


def _make_optimizer(name: str, param: Tensor, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW([param], lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam([param], lr=lr)
    raise ValueError(f"unknown optimizer {name!r} (adamw | adam)")


def _gradient_fit(
    var0: Tensor,
    image_fn: Callable[[Tensor], Tensor],
    y: Tensor,
    operator: LinearOperator,
    *,
    optimizer: str,
    lr: float,
    weight_decay: float,
    max_iter: int,
    threshold: Tensor | None,
    z_scale: float = 0.0,
    stride: int = 1,
) -> tuple[Tensor, SolverTrace]:
    """Minimise ``sum_b ||y_b - A image_fn(v)_b||^2 (+ z_scale ||D_z image_fn(v)||^2)`` over ``v``
    from ``var0`` with Adam(W); items whose squared data residual falls to ``threshold`` are frozen
    where they are."""
    var = var0.detach().clone().requires_grad_(True)
    opt = _make_optimizer(optimizer, var, lr, weight_decay)
    iterations = torch.zeros(var.shape[0], dtype=torch.long, device=var.device)
    res_sq = torch.zeros(var.shape[0], device=var.device)
    for _ in range(max_iter):
        with torch.enable_grad():
            image = image_fn(var)
            res_sq = batch_sq_norm(y - operator.forward(image))
            active = torch.ones_like(res_sq, dtype=torch.bool) if threshold is None else res_sq > threshold
            if not bool(active.any()):
                break
            loss = res_sq.sum()
            if z_scale > 0:
                loss = loss + z_scale * z_difference(image, stride).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, var)
        frozen = var.detach().clone()
        var.grad = grad
        opt.step()
        with torch.no_grad():
            var.copy_(torch.where(expand_batch(active, var), var, frozen))
        iterations += active.long()
    else:
        with torch.no_grad():
            res_sq = batch_sq_norm(y - operator.forward(image_fn(var)))
    return var.detach(), SolverTrace(iterations=iterations, residual_sq=res_sq.detach())


def latent_consistency(
    z0_hat: Tensor,
    y: Tensor,
    operator: LinearOperator,
    decode: Decoder,
    config: LatentConsistencyConfig,
    threshold: Tensor | None = None,
    *,
    z_scale: float = 0.0,
    stride: int = 1,
) -> tuple[Tensor, SolverTrace]:
    """``z0_y = argmin_z ||y - A D(z)||^2 (+ z_scale ||D_z D(z)||^2)`` from ``z0_hat`` (ReSample eq. 7).

    Args:
        z0_hat: ``(B, C, h, w)`` start (Tweedie estimate).
        y: ``(B, 1, V, D)`` measurements.
        operator: ``A``.
        decode: ``D``, differentiable.
        config: optimiser settings.
        threshold: ``(B,)`` discrepancy levels (:func:`~resample_med.sampling.linalg.discrepancy_threshold`).
        z_scale: weight of the z-difference penalty (volume mode; 0: slices independent).
        stride: items between z neighbours (``n_samples``).

    Returns:
        ``z0_y (B, C, h, w)`` and a :class:`SolverTrace`.
    """
    return _gradient_fit(
        z0_hat,
        decode,
        y,
        operator,
        optimizer=config.optimizer,
        lr=config.lr,
        weight_decay=config.weight_decay,
        max_iter=config.max_iter,
        threshold=threshold,
        z_scale=z_scale,
        stride=stride,
    )


def pixel_least_squares(
    x0: Tensor,
    y: Tensor,
    operator: LinearOperator,
    config: PixelConsistencyConfig,
    threshold: Tensor | None = None,
    *,
    z_scale: float = 0.0,
    stride: int = 1,
) -> tuple[Tensor, SolverTrace]:
    """``x* = argmin_x ||y - A x||^2 (+ z_scale ||D_z x||^2)`` from ``x0`` (ReSample eq. 8), by
    CGLS or AdamW; ``z_scale > 0`` couples z-adjacent items (volume mode, ``stride`` = items between
    z neighbours).

    Shapes: ``x0 (B, 1, H, W)``, ``y (B, 1, V, D)``.
    """
    if config.solver == "cgls":
        return z_coupled_cgls(
            operator, y, x0.detach(), z_scale=z_scale, stride=stride, max_iter=config.max_iter, threshold=threshold
        )
    if config.solver == "adamw":
        # The official code minimises the *mean* squared residual; Adam is invariant to that scale.
        return _gradient_fit(
            x0,
            lambda x: x,
            y,
            operator,
            optimizer="adamw",
            lr=config.lr,
            weight_decay=config.weight_decay,
            max_iter=config.max_iter,
            threshold=threshold,
            z_scale=z_scale,
            stride=stride,
        )
    raise ValueError(f"unknown pixel solver {config.solver!r} (cgls | adamw)")


def pixel_consistency(
    z0_hat: Tensor,
    y: Tensor,
    operator: LinearOperator,
    decode: Decoder,
    encode: Decoder,
    config: PixelConsistencyConfig,
    threshold: Tensor | None = None,
    *,
    z_scale: float = 0.0,
    stride: int = 1,
) -> tuple[Tensor, SolverTrace]:
    """Pixel-space consistency: ``z0_y = E(argmin_x ||y - A x||^2 (+ z_scale ||D_z x||^2))`` from
    ``x = D(z0_hat)``.

    Returns ``z0_y (B, C, h, w)`` and the pixel solver's :class:`SolverTrace`.
    """
    with torch.no_grad():
        x0 = decode(z0_hat)
    x_star, trace = pixel_least_squares(x0, y, operator, config, threshold, z_scale=z_scale, stride=stride)
    with torch.no_grad():
        return encode(x_star), trace
