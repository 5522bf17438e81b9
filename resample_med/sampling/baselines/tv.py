"""Total-variation regularised reconstruction by PDHG (Chambolle & Pock 2011, Alg. 1).

Solves ``min_x 0.5 ||A~ x - y~||^2 + w TV(x)`` subject to ``x >= lower_bound``, where
``A~ = A / ||A||`` and ``y~ = y / ||A||`` (normalising the operator makes the weight ``w``
independent of the operator's units and, roughly, of the number of views), and
``TV(x) = sum_pixels sqrt((D_h x)^2 + (D_v x)^2)`` is the isotropic TV with forward
differences (Neumann boundary). With ``K = [A~; grad]``, ``||K||^2 <= 1 + 8``; the steps
``tau = step_fraction * step_ratio / ||K||``, ``sigma = step_fraction / (step_ratio ||K||)``
satisfy ``tau sigma ||K||^2 < 1``. Starting from the (clipped) FBP image when the operator has
one removes most of the slow low-frequency convergence.

Anchored TV (``anchor`` given, ReSample's final refinement of its posterior mean): the objective
gains ``(anchor_weight / 2) ||x - anchor||^2``, a Gaussian centred on another estimate, so the
minimiser lies between that estimate and plain TV (``anchor_weight -> 0``: TV; ``-> inf``: the
anchor). The term is strongly convex and enters the primal proximal step only,
``x <- max((v + tau mu anchor) / (1 + tau mu), lower_bound)`` with ``mu = anchor_weight``, so
``||K||`` and the steps are unchanged; the iterations start from the anchor.

3-D TV (volume mode, ``z_weight > 0``): the batch holds adjacent slices in z order and the
gradient gains the z difference ``z_weight * (x_{k+1} - x_k)`` (zero after the last slice), so
``TV(x) = sum_voxels sqrt((D_h x)^2 + (D_v x)^2 + z_weight^2 (D_z x)^2)`` and
``||K||^2 <= 1 + 8 + 4 z_weight^2``. ``z_weight = 0`` is 2-D TV slice by slice, computed exactly
as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Literal

import torch
from torch import Tensor

from resample_med.sampling import tuned
from resample_med.sampling.linalg import batch_sq_norm, operator_norm
from resample_med.sampling.prior import LinearOperator
from resample_med.sampling.result import ProgressCallback, ProgressEvent, Reconstruction, notify
from resample_med.sampling.rng import Generator, generator_or_default

GRADIENT_NORM_SQ_BOUND = 8.0
"""``||grad||^2 <= 8`` for 2-D forward differences."""
Z_DIFFERENCE_NORM_SQ_BOUND = 4.0
"""``||D_z||^2 <= 4`` for forward differences along z."""


@dataclass(frozen=True)
class TVConfig:
    """Attributes:
    weight: TV weight ``w`` in the normalised problem (tuned once on val, see
        :mod:`resample_med.sampling.tuned`).
    max_iter: PDHG iterations.
    lower_bound: box constraint in model units (-1 = air: attenuation >= 0); ``None`` for none.
    step_fraction: ``tau sigma ||K||^2 = step_fraction^2`` (< 1).
    step_ratio: ``tau / sigma`` balance (primal step ``step_fraction * step_ratio / ||K||``).
    init: ``"fbp"`` (the operator's FBP, clipped to the box, where available) or ``"zeros"``.
    power_iterations: iterations of the power method estimating ``||A||``.
    report_every: progress events every this many iterations.
    z_weight: weight of the z differences in 3-D TV relative to the in-plane ones (volume
        mode: the batch holds adjacent slices in z order); 0 (every preset): 2-D TV per slice.
        The volume pipeline's tuned default is :data:`resample_med.sampling.tuned.TV_Z_WEIGHT`.
    """

    weight: float = tuned.TV_WEIGHT
    max_iter: int = 150
    lower_bound: float | None = -1.0
    step_fraction: float = 0.99
    step_ratio: float = 1.0
    init: Literal["fbp", "zeros"] = "fbp"
    power_iterations: int = 30
    report_every: int = 10
    z_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.z_weight >= 0:
            raise ValueError(f"TV config: z_weight must be >= 0, got {self.z_weight}")


PRESETS: dict[str, TVConfig] = {"paper": TVConfig(), "default": TVConfig(), "fast": TVConfig(max_iter=80)}


def image_gradient(x: Tensor) -> Tensor:
    """Forward differences with a zero last difference: ``(B, 1, H, W) -> (B, 2, H, W)`` (rows, cols)."""
    dv = torch.zeros_like(x)
    dh = torch.zeros_like(x)
    dv[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    dh[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.cat([dv, dh], dim=1)


def image_gradient_adjoint(g: Tensor) -> Tensor:
    """Exact adjoint of :func:`image_gradient` (minus the divergence): ``(B, 2, H, W) -> (B, 1, H, W)``."""
    gv, gh = g[:, :1], g[:, 1:]
    out = torch.zeros_like(gv)
    out[..., :-1, :] -= gv[..., :-1, :]
    out[..., 1:, :] += gv[..., :-1, :]
    out[..., :, :-1] -= gh[..., :, :-1]
    out[..., :, 1:] += gh[..., :, :-1]
    return out


def volume_gradient(x: Tensor, z_weight: float) -> Tensor:
    """:func:`image_gradient` plus ``z_weight`` times the forward z difference (zero after the last
    item): ``(B, 1, H, W) -> (B, 3, H, W)`` (rows, cols, z)."""
    dz = torch.zeros_like(x)
    dz[:-1] = z_weight * (x[1:] - x[:-1])
    return torch.cat([image_gradient(x), dz], dim=1)


def volume_gradient_adjoint(g: Tensor, z_weight: float) -> Tensor:
    """Exact adjoint of :func:`volume_gradient`: ``(B, 3, H, W) -> (B, 1, H, W)``."""
    out = image_gradient_adjoint(g[:, :2])
    gz = z_weight * g[:-1, 2:]
    out[:-1] -= gz
    out[1:] += gz
    return out


def tv_pdhg(
    y: Tensor,
    operator: LinearOperator,
    config: TVConfig,
    *,
    generator: Generator | None = None,
    callback: ProgressCallback | None = None,
    anchor: Tensor | None = None,
    anchor_weight: float = 0.0,
) -> Reconstruction:
    """TV-regularised least squares by PDHG: ``y (B, 1, V, D) -> x (B, 1, H, W)``.

    Dual updates (``F*`` of the data term and of ``w ||.||_{2,1}``):
    ``p <- (p + sigma (A~ xbar - y~)) / (1 + sigma)``,
    ``q <- proj_{|q_ij| <= w}(q + sigma grad xbar)``; primal:
    ``x <- max(x - tau (A~^T p + grad^T q), lower_bound)``, ``xbar = 2 x_new - x``. With
    ``config.z_weight > 0`` ``grad`` is :func:`volume_gradient` (3-D TV over the batch).

    Args:
        anchor: ``(B, 1, H, W)`` estimate the solution is pulled towards by
            ``(anchor_weight / 2) ||x - anchor||^2`` (module docstring); also the starting point
            (``config.init`` is then unused). ``None``: plain TV.
        anchor_weight: ``mu >= 0`` of that term, in the normalised problem (the data term's
            Hessian ``A~^T A~`` has norm 1).
    """
    if anchor is None and anchor_weight:
        raise ValueError("anchored TV: anchor_weight given without an anchor")
    if not anchor_weight >= 0:
        raise ValueError(f"anchored TV: anchor_weight must be >= 0, got {anchor_weight}")
    grad: Callable[[Tensor], Tensor] = image_gradient
    grad_adjoint: Callable[[Tensor], Tensor] = image_gradient_adjoint
    if config.z_weight > 0:
        grad = partial(volume_gradient, z_weight=config.z_weight)
        grad_adjoint = partial(volume_gradient_adjoint, z_weight=config.z_weight)
    n_components = 3 if config.z_weight > 0 else 2
    with torch.no_grad():
        if anchor is not None:
            x = anchor if config.lower_bound is None else anchor.clamp_min(config.lower_bound)
        elif config.init == "fbp" and hasattr(operator, "fbp"):
            x = operator.fbp(y)
            if config.lower_bound is not None:
                x = x.clamp_min(config.lower_bound)
        else:
            x = torch.zeros_like(operator.adjoint(y))
        gen = generator_or_default(generator, "cpu")
        a_norm = operator_norm(
            operator, (1, *x.shape[1:]), n_iter=config.power_iterations, generator=gen, device=x.device, dtype=x.dtype
        )
        y_n = y / a_norm
        k_norm = (1.0 + GRADIENT_NORM_SQ_BOUND + Z_DIFFERENCE_NORM_SQ_BOUND * config.z_weight**2) ** 0.5
        tau = config.step_fraction * config.step_ratio / k_norm
        sigma = config.step_fraction / (config.step_ratio * k_norm)
        p = torch.zeros_like(y)
        q = torch.zeros((x.shape[0], n_components, *x.shape[2:]), dtype=x.dtype, device=x.device)
        x_bar = x
        for it in range(config.max_iter):
            p = (p + sigma * (operator.forward(x_bar) / a_norm - y_n)) / (1.0 + sigma)
            q = q + sigma * grad(x_bar)
            q = q / (q.norm(dim=1, keepdim=True) / config.weight).clamp_min(1.0)
            x_new = x - tau * (operator.adjoint(p) / a_norm + grad_adjoint(q))
            if anchor is not None and anchor_weight:
                x_new = (x_new + (tau * anchor_weight) * anchor) / (1.0 + tau * anchor_weight)
            if config.lower_bound is not None:
                x_new = x_new.clamp_min(config.lower_bound)
            x_bar = 2.0 * x_new - x
            x = x_new
            if config.report_every and (it + 1) % config.report_every == 0:
                notify(callback, ProgressEvent("iterations", it + 1, config.max_iter, x))
        rel = (batch_sq_norm(y - operator.forward(x)) / batch_sq_norm(y).clamp_min(1e-30)).sqrt()
    return Reconstruction(
        image=x,
        info={
            "method": "tv",
            "config": asdict(config),
            "anchor_weight": anchor_weight if anchor is not None else None,
            "operator_norm": a_norm,
            "relative_residual": rel.tolist(),
        },
    )
