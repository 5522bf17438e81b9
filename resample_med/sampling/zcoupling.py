"""Data consistency coupled along z: the slices of a batch solved jointly (volume mode).

A batch ``x (B, 1, H, W)`` whose items are adjacent slices in z order (with ``n_samples``
posterior samples per slice interleaved: item ``k * n + s`` is sample ``s`` of slice ``k``, so the
z neighbour of an item lies ``stride = n_samples`` items further) is fitted to its data with a
quadratic penalty on the z differences, as DiffusionMBIR (Chung et al., CVPR 2023) regularises
its data-consistency step along z:

``min_x  sum_k ||y_k - A x_k||^2 + lam * sum_k ||x_{k+1} - x_k||^2,   lam = z_weight * ||A||^2``

(normalising by ``||A||^2`` makes ``z_weight`` independent of the operator's units, as TV's weight
is). The problem is the least-squares system ``[A; sqrt(lam) D_z] x = [y; 0]``, solved by CGLS on
the whole batch as one system (:func:`z_coupled_cgls`). With ``z_weight = 0`` it decouples into
the slice-wise problems, which are solved exactly as in slice mode (per-slice CGLS).
"""

from __future__ import annotations

import torch
from torch import Tensor

from resample_med.sampling.linalg import SolverTrace, batch_sq_norm, cgls_solve, operator_norm
from resample_med.sampling.prior import LinearOperator

NORM_POWER_ITERATIONS = 20
"""Power iterations of the ``||A||`` estimate that scales ``z_weight``."""
NORM_SEED = 0
"""Seed of that estimate's random start (its own generator: the sampler's stream is untouched)."""
_TINY = 1e-30


def z_difference(x: Tensor, stride: int = 1) -> Tensor:
    """``D_z x``: differences of z neighbours, ``(B, ...) -> (B - stride, ...)`` (empty for ``B <= stride``)."""
    return x[stride:] - x[:-stride]


def z_difference_adjoint(d: Tensor, n_items: int, stride: int = 1) -> Tensor:
    """Exact adjoint of :func:`z_difference`: ``(B - stride, ...) -> (B, ...)`` with ``B = n_items``."""
    out = d.new_zeros((n_items, *d.shape[1:]))
    if n_items > stride:
        out[:-stride] -= d
        out[stride:] += d
    return out


def z_penalty_scale(
    operator: LinearOperator,
    image_shape: tuple[int, ...],
    z_weight: float,
    device: torch.device | str,
    dtype: torch.dtype,
) -> float:
    """``lam = z_weight * ||A||^2`` for an operator on images of ``image_shape`` ``(1, 1, H, W)``
    (0 without computing the norm when ``z_weight == 0``)."""
    if z_weight == 0:
        return 0.0
    generator = torch.Generator().manual_seed(NORM_SEED)
    norm = operator_norm(
        operator, image_shape, n_iter=NORM_POWER_ITERATIONS, generator=generator, device=device, dtype=dtype
    )
    return float(z_weight) * norm**2


def z_coupled_cgls(
    operator: LinearOperator,
    y: Tensor,
    x0: Tensor,
    *,
    z_scale: float,
    stride: int = 1,
    max_iter: int,
    threshold: Tensor | None = None,
    rtol: float = 1e-6,
) -> tuple[Tensor, SolverTrace]:
    """CGLS for ``min_x ||y - A x||^2 + z_scale ||D_z x||^2`` over the whole batch, from ``x0``.

    Stopping: the joint discrepancy principle ``sum_k ||y_k - A x_k||^2 <= sum_k threshold_k``
    (the slab's data fit reaches its noise level), ``||grad|| <= rtol ||grad_0||``, or
    ``max_iter``. With ``z_scale == 0`` the items are independent and each runs its own CGLS
    (:func:`resample_med.sampling.linalg.cgls_solve`, per-item stopping), exactly as slice mode.

    Args:
        operator: ``A`` with exact adjoint.
        y: ``(B, 1, V, D)`` measurements of adjacent slices (z order, ``stride`` items apart).
        x0: ``(B, 1, H, W)`` start.
        z_scale: ``lam >= 0`` (:func:`z_penalty_scale`).
        stride: items between z neighbours (``n_samples``).
        max_iter: iteration cap.
        threshold: ``(B,)`` squared data-residual levels.

    Returns:
        ``x (B, 1, H, W)`` and a :class:`SolverTrace` (every item reports the joint iteration
        count and its own data residual).
    """
    if z_scale < 0:
        raise ValueError(f"z_scale must be >= 0, got {z_scale}")
    if z_scale == 0:
        return cgls_solve(operator, y, x0, max_iter=max_iter, threshold=threshold, rtol=rtol)
    root = z_scale**0.5
    n_items = x0.shape[0]
    x = x0.clone()
    r = y - operator.forward(x)
    r_z = -root * z_difference(x, stride)
    s = operator.adjoint(r) + root * z_difference_adjoint(r_z, n_items, stride)
    p = s.clone()
    gamma = float(batch_sq_norm(s).sum())
    gamma_floor = max(rtol**2 * gamma, _TINY)
    level = None if threshold is None else float(threshold.sum())
    iterations = 0
    for _ in range(max_iter):
        if gamma <= gamma_floor or (level is not None and float(batch_sq_norm(r).sum()) <= level):
            break
        q = operator.forward(p)
        q_z = root * z_difference(p, stride)
        alpha = gamma / max(float(batch_sq_norm(q).sum() + batch_sq_norm(q_z).sum()), _TINY)
        x = x + alpha * p
        r = r - alpha * q
        r_z = r_z - alpha * q_z
        s = operator.adjoint(r) + root * z_difference_adjoint(r_z, n_items, stride)
        gamma_new = float(batch_sq_norm(s).sum())
        p = s + (gamma_new / max(gamma, _TINY)) * p
        gamma = gamma_new
        iterations += 1
    trace = SolverTrace(
        iterations=torch.full((n_items,), iterations, dtype=torch.long, device=x.device), residual_sq=batch_sq_norm(r)
    )
    return x, trace
