"""Batched linear-algebra helpers shared by the solvers: inner products, the discrepancy
threshold, CGLS and the power iteration.

All functions treat dimension 0 as the batch: every slice gets its own step sizes and its own
stopping decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from resample_med.sampling.prior import LinearOperator
from resample_med.sampling.rng import Generator, single_generator

_TINY = 1e-30
"""Guards divisions by squared norms that reach exactly zero (a converged or zero item)."""


def batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-item inner product ``<a_i, b_i>`` over all non-batch dims: ``(B, ...) -> (B,)``."""
    return (a * b).flatten(1).sum(dim=1)


def batch_sq_norm(a: Tensor) -> Tensor:
    """Per-item squared Euclidean norm ``||a_i||^2``: ``(B, ...) -> (B,)``."""
    return batch_dot(a, a)


def expand_batch(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-item vector ``(B,)`` to ``(B, 1, ..., 1)`` so it broadcasts against ``like``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def discrepancy_threshold(y: Tensor, noise_std: float | Tensor | None, tau: float) -> Tensor | None:
    """Squared-residual level of the discrepancy principle, per item.

    ``||y - A x||^2 <= tau * sum_i sigma_i^2`` (``= tau * m * sigma^2`` for a scalar
    ``sigma``; Morozov's discrepancy principle): an iterate that fits the data to the noise
    level is not refined further.

    Args:
        y: measurements ``(B, ...)``.
        noise_std: per-measurement standard deviation, a scalar or a tensor broadcastable to
            ``y``; ``None`` when unknown (then no threshold).
        tau: safety factor (about 1).

    Returns:
        ``(B,)`` thresholds on ``||y - A x||^2``, or ``None``.
    """
    if noise_std is None:
        return None
    var = torch.as_tensor(noise_std, dtype=y.dtype, device=y.device) ** 2
    return tau * var.expand_as(y).flatten(1).sum(dim=1)


@dataclass(frozen=True)
class SolverTrace:
    """How an iterative solver ended, per item.

    Attributes:
        iterations: ``(B,)`` iterations each item ran.
        residual_sq: ``(B,)`` final ``||y - A x||^2``.
    """

    iterations: Tensor
    residual_sq: Tensor


def cgls_solve(
    operator: LinearOperator,
    y: Tensor,
    x0: Tensor,
    *,
    max_iter: int,
    threshold: Tensor | None = None,
    rtol: float = 1e-6,
) -> tuple[Tensor, SolverTrace]:
    """CGLS for ``min_x ||y - A x||^2`` started at ``x0`` (conjugate gradients on the normal
    equations ``A^T A x = A^T y`` without forming them; Hestenes-Stiefel / Bjorck 1996, alg. 7.4.1).

    Started at ``x0`` it converges to the least-squares solution nearest ``x0`` (the iterates
    stay in ``x0 + range(A^T)``); stopped early by the discrepancy principle it acts as a
    regulariser (semi-convergence).

    Args:
        operator: ``A`` with exact ``adjoint``.
        y: ``(B, 1, V, D)`` measurements.
        x0: ``(B, 1, H, W)`` start.
        max_iter: iteration cap.
        threshold: ``(B,)`` squared-residual levels; an item stops once below its level.
        rtol: an item also stops once ``||A^T r|| <= rtol ||A^T r_0||`` (converged; iterating
            further in float32 only amplifies round-off).

    Returns:
        ``x (B, 1, H, W)`` and a :class:`SolverTrace`.
    """
    x = x0.clone()
    r = y - operator.forward(x)
    s = operator.adjoint(r)
    p = s.clone()
    gamma = batch_sq_norm(s)
    gamma_floor = (rtol**2 * gamma).clamp_min(_TINY)
    iterations = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    res_sq = batch_sq_norm(r)
    for _ in range(max_iter):
        active = gamma > gamma_floor
        if threshold is not None:
            active &= res_sq > threshold
        if not bool(active.any()):
            break
        q = operator.forward(p)
        alpha = torch.where(active, gamma / batch_sq_norm(q).clamp_min(_TINY), torch.zeros_like(gamma))
        x = x + expand_batch(alpha, x) * p
        r = r - expand_batch(alpha, r) * q
        s = operator.adjoint(r)
        gamma_new = batch_sq_norm(s)
        beta = gamma_new / gamma.clamp_min(_TINY)
        p = torch.where(expand_batch(active, p), s + expand_batch(beta, p) * p, p)
        gamma = torch.where(active, gamma_new, gamma)
        iterations += active.long()
        res_sq = batch_sq_norm(r)
    return x, SolverTrace(iterations=iterations, residual_sq=res_sq)


def operator_norm(
    operator: LinearOperator,
    image_shape: tuple[int, ...],
    *,
    n_iter: int,
    generator: Generator,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> float:
    """Largest singular value ``||A||_2`` by the power iteration on ``A^T A``.

    Args:
        operator: ``A`` with exact ``adjoint``.
        image_shape: shape of one input ``(1, 1, H, W)``.
        n_iter: power iterations.
        generator: the random start's generator.

    Returns:
        The estimate of ``||A||_2`` (from below; the error decays like the ratio of the top two
        singular values to the power ``2 n_iter``).
    """
    single = single_generator(generator)
    v = torch.randn(image_shape, generator=single, device=single.device, dtype=dtype).to(device)
    v = v / expand_batch(batch_sq_norm(v).sqrt(), v)
    sigma_sq = torch.zeros(())
    for _ in range(n_iter):
        w = operator.adjoint(operator.forward(v))
        sigma_sq = batch_dot(v, w).max()
        v = w / expand_batch(batch_sq_norm(w).sqrt().clamp_min(_TINY), w)
    return float(sigma_sq.clamp_min(0.0).sqrt())
