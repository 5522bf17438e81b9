"""The measurement gradient of diffusion posterior sampling (DPS; Chung et al., ICLR 2023, Alg. 1),
in latent space: ``grad_{z_t} ||y - A D(z0_hat(z_t))||`` with ``z0_hat`` Tweedie's estimate.

Used by the Latent-DPS baseline and by ReSample's optional DPS-style step (as the official code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from resample_med.sampling.ddim import tweedie_z0
from resample_med.sampling.linalg import batch_sq_norm
from resample_med.sampling.prior import LatentPrior, LinearOperator


@dataclass(frozen=True)
class MeasurementGradient:
    """One network evaluation with its measurement gradient.

    Attributes:
        eps: ``(B, C, h, w)`` predicted noise at ``z_t`` (detached).
        z0_hat: ``(B, C, h, w)`` Tweedie estimate (detached).
        grad: ``(B, C, h, w)`` ``grad_{z_t} ||y_b - A D(z0_hat_b)||`` for each item ``b``.
        residual_norm: ``(B,)`` ``||y_b - A D(z0_hat_b)||``.
    """

    eps: Tensor
    z0_hat: Tensor
    grad: Tensor
    residual_norm: Tensor


def measurement_gradient(
    z_t: Tensor,
    t: Tensor,
    alpha_bar_t: float,
    y: Tensor,
    operator: LinearOperator,
    prior: LatentPrior,
) -> MeasurementGradient:
    """Evaluate ``eps_theta(z_t, t)`` and back-propagate the residual norm through the decoder
    and the noise predictor (DPS eq. 16: the gradient of ``||y - A(x0_hat(x_t))||`` w.r.t.
    ``x_t``, here ``x0_hat = D(z0_hat(z_t))``).

    Shapes: ``z_t (B, C, h, w)``, ``t (B,)`` long, ``y (B, 1, V, D)``.
    """
    with torch.enable_grad():
        z = z_t.detach().requires_grad_(True)
        eps = prior.predict_noise(z, t)
        z0_hat = tweedie_z0(z, eps, alpha_bar_t)
        norms = batch_sq_norm(y - operator.forward(prior.decode(z0_hat))).sqrt()
        (grad,) = torch.autograd.grad(norms.sum(), z)
    return MeasurementGradient(eps=eps.detach(), z0_hat=z0_hat.detach(), grad=grad, residual_norm=norms.detach())
