"""The two interfaces every reconstruction method is written against.

* :class:`LatentPrior` -- a latent diffusion model: an autoencoder (``encode`` / ``decode``), a
  noise predictor ``eps_theta(z_t, t)`` and the DDIM noise schedule. The shipped
  :class:`resample_med.models.LatentDiffusionBundle` implements it; tests use small analytic
  doubles.
* :class:`LinearOperator` -- the linear measurement model ``y = A x + n`` with ``x`` in model
  units ``(B, 1, H, W)`` and ``y`` shaped ``(B, 1, V, D)`` (views x detector bins). ``adjoint``
  must be the exact transpose of ``forward`` (CGLS, PDHG and the power iteration rely on it).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from diffusers import DDIMScheduler
from torch import Tensor


@runtime_checkable
class LatentPrior(Protocol):
    """A latent diffusion prior over images in model units.

    Attributes:
        scheduler: the DDIM scheduler the noise predictor was trained with (T train steps).
        latent_shape: ``(C, h, w)`` of one latent.
    """

    scheduler: DDIMScheduler
    latent_shape: tuple[int, int, int]

    def encode(self, x: Tensor) -> Tensor:
        """Images ``(B, 1, H, W)`` -> scaled latents ``(B, C, h, w)``."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents ``(B, C, h, w)`` -> images ``(B, 1, H, W)``; differentiable in ``z``."""
        ...

    def predict_noise(self, z: Tensor, t: Tensor) -> Tensor:
        """Noise prediction ``eps_theta(z_t, t)``: ``z (B, C, h, w)``, ``t`` LongTensor ``(B,)``."""
        ...


@runtime_checkable
class LinearOperator(Protocol):
    """Linear forward model ``A``: ``(B, 1, H, W) -> (B, 1, V, D)`` with its exact adjoint.

    An optional ``fbp(y) -> x`` (filtered back-projection) is used by the ``fbp`` method only.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``A x``: ``(B, 1, H, W) -> (B, 1, V, D)``."""
        ...

    def adjoint(self, y: Tensor) -> Tensor:
        """``A^T y``: ``(B, 1, V, D) -> (B, 1, H, W)``."""
        ...
