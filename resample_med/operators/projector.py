"""Matched forward / adjoint projector for one geometry, with FBP, on any device and batch shape.

``forward`` applies the system matrix ``A`` of Joseph's method (Joseph 1982, IEEE TMI 1(3):192-196;
:mod:`resample_med.operators.joseph`) with ``torch.sparse.mm``, ``adjoint`` its stored exact transpose; both are differentiable and each is the other's backward.
Images are ``(..., H, W)`` attenuation in 1/mm (any units work: the operator is linear), sinograms
``(..., V, D)`` line integrals in (image units) x mm. Build projectors with
:func:`resample_med.operators.make_projector`, which caches them.
"""

from __future__ import annotations

import math

import torch

from resample_med.geometry import Geometry
from resample_med.operators import fbp as fbp_module
from resample_med.operators.sparse import SparsePair, apply_sparse, csr_from_scipy, csr_to_scipy

DEFAULT_POWER_ITERATIONS = 100
"""Power-iteration steps of :meth:`Projector.norm_estimate`."""

POWER_ITERATION_RTOL = 1e-7
"""Stop the power iteration when the estimate changes by less than this (relative)."""


def _flatten(x: torch.Tensor, trailing: tuple[int, int], what: str) -> tuple[torch.Tensor, torch.Size]:
    """``(..., a, b) -> (B, a * b)`` and the leading shape."""
    if x.dim() < 2 or tuple(x.shape[-2:]) != trailing:
        raise ValueError(
            f"resample_med/operators/projector.py: {what} must have shape (..., {trailing[0]}, {trailing[1]}), "
            f"got {tuple(x.shape)}"
        )
    lead = x.shape[:-2]
    return x.reshape(-1, trailing[0] * trailing[1]), lead


class Projector:
    """Forward projection ``A``, exact adjoint ``A^T`` and FBP for ``geometry``.

    Attributes:
        geometry: the acquisition geometry (angles in radians, lengths in mm).
    """

    def __init__(self, geometry: Geometry, system: SparsePair) -> None:
        expected = (geometry.n_views * geometry.det_count, geometry.image_size**2)
        if system.shape != expected:
            raise ValueError(
                f"resample_med/operators/projector.py: system matrix shape {system.shape} does not match "
                f"the geometry's (V*D, H*W) = {expected}"
            )
        self.geometry = geometry
        self._system = system
        self._fbp_matrix: torch.Tensor | None = None

    @property
    def system(self) -> SparsePair:
        """The stored ``(A, A^T)`` pair: CSR ``(V*D, H*W)`` and ``(H*W, V*D)``, int32 indices."""
        return self._system

    @property
    def device(self) -> torch.device:
        return self._system.device

    @property
    def dtype(self) -> torch.dtype:
        return self._system.dtype

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.geometry.image_shape

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """``(V, D)``."""
        return self.geometry.sinogram_shape

    @property
    def nnz(self) -> int:
        """Non-zeros of ``A``."""
        return int(self._system.matrix.values().numel())

    def __repr__(self) -> str:
        return (
            f"Projector({type(self.geometry).__name__}, image {self.image_shape}, sinogram {self.sinogram_shape}, "
            f"nnz={self.nnz}, device={self.device}, dtype={self.dtype})"
        )

    def _check(self, x: torch.Tensor) -> None:
        if x.device != self.device or x.dtype != self.dtype:
            raise ValueError(
                f"resample_med/operators/projector.py: input is {x.dtype} on {x.device} but the projector is "
                f"{self.dtype} on {self.device}; use projector.to(device, dtype) or make_projector(..., device, dtype)"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Line integrals ``A x``: ``(..., H, W) -> (..., V, D)``; differentiable (backward = ``A^T``)."""
        self._check(x)
        flat, lead = _flatten(x, self.image_shape, "image")
        return apply_sparse(self._system, flat).reshape(*lead, *self.sinogram_shape)

    __call__ = forward

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Exact adjoint ``A^T y``: ``(..., V, D) -> (..., H, W)``; differentiable (backward = ``A``)."""
        self._check(y)
        flat, lead = _flatten(y, self.sinogram_shape, "sinogram")
        return apply_sparse(self._system.transposed(), flat).reshape(*lead, *self.image_shape)

    backward = adjoint
    backprojection = adjoint

    def filter_sinogram(self, y: torch.Tensor, filter_name: str = "ramp") -> torch.Tensor:
        """FBP filtering step (fan: with cosine pre-weight): ``(..., V, D) -> (..., V, D)``.

        ``filter_name``: ``ramp``, ``shepp-logan``, ``cosine`` or ``hann``.
        """
        return fbp_module.filter_sinogram(y, self.geometry, filter_name)

    def fbp(self, y: torch.Tensor, filter_name: str = "ramp") -> torch.Tensor:
        """Filtered backprojection ``(..., V, D) -> (..., H, W)``; ``fbp(forward(x)) ~= x``.

        See :mod:`resample_med.operators.fbp` for the method (pixel-driven, weighted for fan beam).
        """
        self._check(y)
        filtered = self.filter_sinogram(y, filter_name)
        flat, lead = _flatten(filtered, self.sinogram_shape, "sinogram")
        if self._fbp_matrix is None:
            matrix = csr_from_scipy(fbp_module.build_fbp_backprojector(self.geometry), self.dtype)
            self._fbp_matrix = matrix.to(self.device) if self.device.type != "cpu" else matrix
        out = torch.sparse.mm(self._fbp_matrix, flat.t().contiguous()).t()
        return out.reshape(*lead, *self.image_shape)

    def subset(self, view_indices: list[int] | tuple[int, ...] | torch.Tensor) -> Projector:
        """Projector for ``geometry.subset(view_indices)`` built from the rows of this one's matrix."""
        indices = [int(i) for i in torch.as_tensor(view_indices).reshape(-1).tolist()]
        geometry = self.geometry.subset(indices)
        det = self.geometry.det_count
        views = torch.tensor(indices, dtype=torch.int64)
        rows = (views[:, None] * det + torch.arange(det)[None]).reshape(-1)
        matrix = csr_to_scipy(self._system.matrix.cpu())[rows.numpy()]
        system = SparsePair.from_scipy(matrix, self.dtype)
        return Projector(geometry, system.to(self.device) if self.device.type != "cpu" else system)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Projector:
        """This projector on ``device`` with values cast to ``dtype`` (a new object; matrices copied)."""
        return Projector(self.geometry, self._system.to(device, dtype))

    def norm_estimate(self, n_iter: int = DEFAULT_POWER_ITERATIONS) -> float:
        """Spectral norm ``||A||_2`` by power iteration on ``A^T A``.

        Starts from the all-ones image: ``A^T A`` has non-negative entries, so its leading eigenvector
        is non-negative (Perron-Frobenius) and not orthogonal to the start; no randomness needed.
        """
        v = torch.ones(1, self.image_shape[0] * self.image_shape[1], device=self.device, dtype=self.dtype)
        v = v / torch.linalg.vector_norm(v)
        estimate = 0.0
        with torch.no_grad():
            for _ in range(n_iter):
                w = self._system.transposed().matmul(self._system.matmul(v))
                norm = float(torch.linalg.vector_norm(w))
                if norm == 0.0:
                    return 0.0
                v = w / norm
                previous, estimate = estimate, math.sqrt(norm)
                if abs(estimate - previous) <= POWER_ITERATION_RTOL * estimate:
                    break
        return estimate
