"""torch-radon compatible classes (``Radon``, ``RadonFanbeam``) backed by our cached sparse projectors.

Code written for torch-radon 1.x ports by changing one import::

    from resample_med.operators.torch_radon import Radon, RadonFanbeam

Semantics kept from torch-radon: lengths in pixel units (pixel side 1), angles in radians with
the orientation of ASTRA and scikit-image (which is also this package's convention, see
:mod:`resample_med.geometry`), ``det_count`` defaulting to ``resolution``, the fan defaults
``det_distance = source_distance`` (then ``det_spacing = 2``) and
``det_spacing = (source_distance + det_distance) / source_distance``, inputs ``(..., r, r)`` and
sinograms ``(..., len(angles), det_count)`` with any leading dims, ``backward`` = ``backprojection``,
and ``backprojection(filter_sinogram(y))`` approximating the image for parallel beam.

Differences: ``backprojection`` is the *exact* adjoint of ``forward`` (torch-radon's is only
approximately so), it works on CPU and CUDA in float32 or float64, and ``fbp`` gives the proper
pixel-driven FBP (for fan beam the weighted flat-detector FBP, which torch-radon lacks). Because the
exact adjoint is ray-driven, ``backprojection(filter_sinogram(y))`` shows mild Moire ripple; prefer
``fbp``. ``filter_sinogram`` of a fan-beam sinogram returns the pre-weighted, filtered sinogram that
``fbp`` backprojects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from resample_med.geometry import FanBeamGeometry, Geometry, ParallelBeamGeometry
from resample_med.operators.cache import make_projector
from resample_med.operators.fbp import angular_step
from resample_med.operators.projector import Projector

PIXEL_SPACING = 1.0
"""torch-radon measures every length in pixels."""

DEFAULT_FAN_DET_SPACING = 2.0
"""torch-radon's bin width when ``det_distance`` is left at its default (= ``source_distance``)."""


def _as_angles(angles: Sequence[float] | np.ndarray | torch.Tensor) -> tuple[float, ...]:
    if isinstance(angles, torch.Tensor):
        angles = angles.detach().cpu().numpy()
    return tuple(float(a) for a in np.asarray(angles, dtype=np.float64).reshape(-1))


class _RadonBase:
    """Shared torch-radon behaviour; subclasses set ``self.geometry``."""

    geometry: Geometry

    def __init__(self, resolution: int, clip_to_circle: bool) -> None:
        self.resolution = int(resolution)
        self.clip_to_circle = bool(clip_to_circle)

    def projector(self, device: torch.device | str, dtype: torch.dtype) -> Projector:
        """The cached :class:`Projector` for this geometry on ``device`` with ``dtype``."""
        return make_projector(self.geometry, device, dtype)

    def _mask(self, like: torch.Tensor) -> torch.Tensor:
        """Inscribed-circle mask ``(r, r)`` used when ``clip_to_circle``."""
        centre = (self.resolution - 1) / 2.0
        coords = torch.arange(self.resolution, device=like.device, dtype=like.dtype) - centre
        return ((coords[:, None] ** 2 + coords[None, :] ** 2) <= (self.resolution / 2.0) ** 2).to(like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., r, r) -> (..., len(angles), det_count)``; differentiable."""
        if self.clip_to_circle:
            x = x * self._mask(x)
        return self.projector(x.device, x.dtype).forward(x)

    def backprojection(self, sinogram: torch.Tensor) -> torch.Tensor:
        """Exact adjoint of :meth:`forward`: ``(..., len(angles), det_count) -> (..., r, r)``."""
        image = self.projector(sinogram.device, sinogram.dtype).adjoint(sinogram)
        return image * self._mask(image) if self.clip_to_circle else image

    def backward(self, sinogram: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`backprojection` (torch-radon name)."""
        return self.backprojection(sinogram)

    def fbp(self, sinogram: torch.Tensor, filter_name: str = "ramp") -> torch.Tensor:
        """Filtered backprojection ``(..., len(angles), det_count) -> (..., r, r)``."""
        return self.projector(sinogram.device, sinogram.dtype).fbp(sinogram, filter_name)


class Radon(_RadonBase):
    """Parallel beam as torch-radon's ``Radon(resolution, angles, det_count=-1, det_spacing=1.0, clip_to_circle)``."""

    def __init__(
        self,
        resolution: int,
        angles: Sequence[float] | np.ndarray | torch.Tensor,
        det_count: int = -1,
        det_spacing: float = 1.0,
        clip_to_circle: bool = False,
    ) -> None:
        super().__init__(resolution, clip_to_circle)
        self.det_count = int(det_count) if det_count > 0 else self.resolution
        self.det_spacing = float(det_spacing)
        self.geometry = ParallelBeamGeometry(
            self.resolution, PIXEL_SPACING, self.det_count, self.det_spacing, _as_angles(angles)
        )

    def filter_sinogram(self, sinogram: torch.Tensor, filter_name: str = "ramp") -> torch.Tensor:
        """Filtered sinogram scaled so that ``backprojection`` of it approximates the image.

        The Joseph adjoint sums ``pixel_area / det_spacing`` per view where a pixel-driven
        backprojection sums 1, hence the factor ``dtheta * det_spacing / pixel_area``.
        """
        filtered = self.projector(sinogram.device, sinogram.dtype).filter_sinogram(sinogram, filter_name)
        return filtered * (angular_step(self.geometry) * self.det_spacing / PIXEL_SPACING**2)


class RadonFanbeam(_RadonBase):
    """Flat-detector fan beam as torch-radon's ``RadonFanbeam``.

    ``source_distance``: source to rotation centre; ``det_distance``: rotation centre to detector.
    """

    def __init__(
        self,
        resolution: int,
        angles: Sequence[float] | np.ndarray | torch.Tensor,
        source_distance: float,
        det_distance: float = -1,
        det_count: int = -1,
        det_spacing: float = -1,
        clip_to_circle: bool = False,
    ) -> None:
        super().__init__(resolution, clip_to_circle)
        self.det_count = int(det_count) if det_count > 0 else self.resolution
        if det_distance < 0:
            det_distance = source_distance
            det_spacing = DEFAULT_FAN_DET_SPACING
        if det_spacing < 0:
            det_spacing = (source_distance + det_distance) / source_distance
        self.source_distance = float(source_distance)
        self.det_distance = float(det_distance)
        self.det_spacing = float(det_spacing)
        self.geometry = FanBeamGeometry(
            self.resolution,
            PIXEL_SPACING,
            self.det_count,
            self.det_spacing,
            _as_angles(angles),
            self.source_distance,
            self.source_distance + self.det_distance,
        )

    def filter_sinogram(self, sinogram: torch.Tensor, filter_name: str = "ramp") -> torch.Tensor:
        """Cosine-weighted, half-ramp filtered sinogram as backprojected by :meth:`fbp`'s weighted FBP."""
        return self.projector(sinogram.device, sinogram.dtype).filter_sinogram(sinogram, filter_name)
