"""Matched forward / adjoint projector for one geometry, with FBP, on any device and batch shape.

``forward`` applies the system matrix ``A`` of Joseph's method (Joseph 1982, IEEE TMI 1(3):192-196;
:mod:`resample_med.operators.joseph`) with ``torch.sparse.mm``, ``adjoint`` its stored exact transpose; both are differentiable and each is the other's backward.
Images are ``(..., H, W)`` attenuation in 1/mm (any units work: the operator is linear), sinograms
``(..., V, D)`` line integrals in (image units) x mm. Every method takes torch tensors (returning
tensors, differentiable) or numpy arrays (returning numpy arrays in the input's float dtype, like
ASTRA and tomosipo); ``P.T`` is the adjoint as an operator of its own (``P.T(y) == P.adjoint(y)``).
Build projectors with :func:`resample_med.operators.make_projector`, which caches them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from resample_med.geometry import Geometry
from resample_med.operators import fbp as fbp_module
from resample_med.operators.sparse import SparsePair, apply_sparse, csr_from_scipy, csr_to_scipy

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)
"""A torch tensor or a numpy array: the operators return what they are given."""


def _flatten(x: torch.Tensor, trailing: tuple[int, int], what: str) -> tuple[torch.Tensor, torch.Size]:
    """``(..., a, b) -> (B, a * b)`` and the leading shape."""
    if x.dim() < 2 or tuple(x.shape[-2:]) != trailing:
        raise ValueError(f"{what} has shape {tuple(x.shape)}, expected (..., {trailing[0]}, {trailing[1]})")
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
                f"system matrix shape {system.shape} does not match the geometry's (V*D, H*W) = {expected}"
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

    def _check(self, x: torch.Tensor, what: str, trailing: tuple[int, int]) -> None:
        """Raise a ValueError naming what is wrong with input ``x``: type, shape, dtype or device."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor or a numpy array, got {type(x).__name__}")
        if x.dim() < 2 or tuple(x.shape[-2:]) != trailing:
            raise ValueError(
                f"{what} has shape {tuple(x.shape)}, expected (..., {trailing[0]}, {trailing[1]}) for this projector "
                f"({type(self.geometry).__name__}: image {self.image_shape}, sinogram {self.sinogram_shape} = "
                f"(views, detector bins))"
            )
        if x.device != self.device or x.dtype != self.dtype:
            raise ValueError(
                f"{what} is a {x.dtype} tensor on {x.device} but the projector holds {self.dtype} on {self.device}; "
                f"convert the input (x.to(projector.device, projector.dtype)) or make the projector with "
                f"make_projector(geometry, device, dtype)"
            )

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], x: Any, what: str, trailing: tuple[int, int]) -> Any:
        """``fn(x)`` for a tensor; for a numpy array, on a tensor copy, returned as numpy in ``x``'s float dtype."""
        if isinstance(x, np.ndarray):
            out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
            tensor = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype)
            self._check(tensor, what, trailing)
            with torch.no_grad():
                return fn(tensor).cpu().numpy().astype(out_dtype, copy=False)
        self._check(x, what, trailing)
        return fn(x)

    def forward(self, x: ArrayT) -> ArrayT:
        """Line integrals ``A x``: ``(..., H, W) -> (..., V, D)``; differentiable (backward = ``A^T``)."""

        def project(image: torch.Tensor) -> torch.Tensor:
            flat, lead = _flatten(image, self.image_shape, "image")
            return apply_sparse(self._system, flat).reshape(*lead, *self.sinogram_shape)

        return self._apply(project, x, "image", self.image_shape)

    __call__ = forward

    def adjoint(self, y: ArrayT) -> ArrayT:
        """Exact adjoint ``A^T y``: ``(..., V, D) -> (..., H, W)``; differentiable (backward = ``A``)."""

        def backproject(sinogram: torch.Tensor) -> torch.Tensor:
            flat, lead = _flatten(sinogram, self.sinogram_shape, "sinogram")
            return apply_sparse(self._system.transposed(), flat).reshape(*lead, *self.image_shape)

        return self._apply(backproject, y, "sinogram", self.sinogram_shape)

    @property
    def T(self) -> AdjointProjector:  # noqa: N802 (the usual name of a transpose)
        """The adjoint ``A^T`` as an operator: ``P.T(y) == P.adjoint(y)``, ``P.T.T is P``."""
        return AdjointProjector(self)

    def filter_sinogram(self, y: ArrayT, filter_name: str = "ramp") -> ArrayT:
        """FBP filtering step (fan: with cosine pre-weight): ``(..., V, D) -> (..., V, D)``.

        ``filter_name``: ``ramp``, ``shepp-logan``, ``cosine`` or ``hann``.
        """
        if isinstance(y, np.ndarray):
            return self._apply(
                lambda s: fbp_module.filter_sinogram(s, self.geometry, filter_name), y, "sinogram", self.sinogram_shape
            )
        return fbp_module.filter_sinogram(y, self.geometry, filter_name)

    def fbp(self, y: ArrayT, filter_name: str = "ramp") -> ArrayT:
        """Filtered backprojection ``(..., V, D) -> (..., H, W)``; ``fbp(forward(x)) ~= x``.

        See :mod:`resample_med.operators.fbp` for the method (pixel-driven, weighted for fan beam).
        """
        return self._apply(lambda s: self._fbp(s, filter_name), y, "sinogram", self.sinogram_shape)

    def _fbp(self, y: torch.Tensor, filter_name: str) -> torch.Tensor:
        """:meth:`fbp` on a checked tensor."""
        filtered = fbp_module.filter_sinogram(y, self.geometry, filter_name)
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


class AdjointProjector:
    """``A^T`` of a :class:`Projector` as an operator: ``forward`` is ``A^T`` and ``adjoint`` is ``A``.

    Shapes swap accordingly: ``image_shape`` is the projector's ``(V, D)`` sinogram shape (this
    operator's input) and ``sinogram_shape`` its ``(H, W)`` output. Tensors and numpy arrays work as
    for the projector.
    """

    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    @property
    def image_shape(self) -> tuple[int, int]:
        """Input shape ``(V, D)``."""
        return self.projector.sinogram_shape

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """Output shape ``(H, W)``."""
        return self.projector.image_shape

    @property
    def T(self) -> Projector:  # noqa: N802
        """The projector itself."""
        return self.projector

    def forward(self, y: ArrayT) -> ArrayT:
        """``A^T y``: ``(..., V, D) -> (..., H, W)``."""
        return self.projector.adjoint(y)

    __call__ = forward

    def adjoint(self, x: ArrayT) -> ArrayT:
        """``A x``: ``(..., H, W) -> (..., V, D)``."""
        return self.projector.forward(x)

    def __repr__(self) -> str:
        return f"{self.projector!r}.T"
