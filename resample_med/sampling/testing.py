"""Analytic test doubles: a Gaussian latent prior with a linear decoder and a dense operator.

With ``z ~ N(0, I)``, ``x = W z`` (``W`` orthogonal) and ``y = A x + n``, the posterior is
Gaussian in closed form, and the exact noise predictor of ``N(0, I)`` data is
``eps(z_t, t) = sqrt(1 - ab_t) z_t`` (since ``E[z_0 | z_t] = sqrt(ab_t) z_t``). Samplers can
therefore be checked against the exact posterior (tests) and run in milliseconds.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler
from torch import Tensor


class GaussianLatentPrior:
    """A :class:`~resample_med.sampling.prior.LatentPrior` with ``z ~ N(0, I)`` and ``x = W z``.

    Args:
        latent_shape: ``(C, h, w)``; the image is ``(1, H, W)`` with ``H * W = C * h * w``.
        image_size: ``H = W``.
        generator: draws the random orthogonal ``W`` (``n x n``, ``n = C h w``).
    """

    def __init__(self, latent_shape: tuple[int, int, int], image_size: int, generator: torch.Generator) -> None:
        n = latent_shape[0] * latent_shape[1] * latent_shape[2]
        if image_size * image_size != n:
            raise ValueError(f"image_size^2 = {image_size**2} != latent size {n}")
        q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
        self.weight = (q * torch.sign(torch.diagonal(r))).to(torch.float32)
        self.latent_shape = latent_shape
        self.image_size = image_size
        self.scheduler = DDIMScheduler()

    def decode(self, z: Tensor) -> Tensor:
        """``x = W z``: ``(B, C, h, w) -> (B, 1, H, W)``."""
        return (z.flatten(1) @ self.weight.T).reshape(z.shape[0], 1, self.image_size, self.image_size)

    def encode(self, x: Tensor) -> Tensor:
        """``z = W^T x`` (the exact inverse): ``(B, 1, H, W) -> (B, C, h, w)``."""
        return (x.flatten(1) @ self.weight).reshape(x.shape[0], *self.latent_shape)

    def predict_noise(self, z: Tensor, t: Tensor) -> Tensor:
        """The exact ``eps(z_t, t) = sqrt(1 - ab_t) z_t`` of ``N(0, I)`` data."""
        ab = self.scheduler.alphas_cumprod.to(z.device, z.dtype)[t.to(z.device)]
        return (1.0 - ab).sqrt().reshape(-1, 1, 1, 1) * z


class DenseOperator:
    """A :class:`~resample_med.sampling.prior.LinearOperator` from a dense matrix ``M (V*D, H*W)``.

    ``forward``: ``(B, 1, H, W) -> (B, 1, V, D)``; ``adjoint`` is ``M^T``; ``fbp`` is the
    minimum-norm least-squares inverse (a stand-in for filtered back-projection).
    """

    def __init__(self, matrix: Tensor, image_size: int, sinogram_shape: tuple[int, int]) -> None:
        if matrix.shape != (sinogram_shape[0] * sinogram_shape[1], image_size * image_size):
            raise ValueError(
                f"matrix shape {tuple(matrix.shape)} does not match sinogram {sinogram_shape} x image {image_size}^2"
            )
        self.matrix = matrix
        self.image_size = image_size
        self.sinogram_shape = sinogram_shape

    def forward(self, x: Tensor) -> Tensor:
        return (x.flatten(1) @ self.matrix.T).reshape(x.shape[0], 1, *self.sinogram_shape)

    def adjoint(self, y: Tensor) -> Tensor:
        return (y.flatten(1) @ self.matrix).reshape(y.shape[0], 1, self.image_size, self.image_size)

    def fbp(self, y: Tensor, filter_name: str = "ramp") -> Tensor:
        del filter_name  # a dense stand-in has no filter choice
        pinv = torch.linalg.pinv(self.matrix)
        return (y.flatten(1) @ pinv.T).reshape(y.shape[0], 1, self.image_size, self.image_size)

    @classmethod
    def random(cls, image_size: int, sinogram_shape: tuple[int, int], generator: torch.Generator) -> DenseOperator:
        """A Gaussian random matrix scaled to unit-order singular values."""
        m, n = sinogram_shape[0] * sinogram_shape[1], image_size * image_size
        matrix = torch.randn(m, n, generator=generator) / n**0.5
        return cls(matrix, image_size, sinogram_shape)
