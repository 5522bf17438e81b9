"""CT acquisition geometries in physical units (mm, radians).

Coordinate conventions (shared by every projector, FBP and oracle test in this package):

* The image ``x[..., i, j]`` has ``H = W = image_size`` square pixels of side ``s = pixel_spacing_mm``.
  Pixel ``(i, j)`` is centred at ``(x_j, y_i) = ((j - (W-1)/2) s, ((H-1)/2 - i) s)``: the x axis runs
  left to right along columns, the y axis runs *up* (row 0 is the top row), the isocentre is the
  image centre.
* Detector bin ``k`` of ``det_count = D`` bins of width ``d = det_spacing_mm`` sits at the signed
  detector coordinate ``u_k = (k - (D-1)/2) d``.
* Parallel beam, view angle ``theta``: the detector axis is ``e_u = (cos theta, sin theta)`` and the
  rays run along ``e_r = (-sin theta, cos theta)``, so the sinogram is the classical Radon transform
  ``p(theta, u) = int f(u e_u + tau e_r) dtau`` (Kak & Slaney 1988, eq. 3.1-3.4).
* Fan beam with a flat detector, source angle ``beta``: the source sits at ``S = -R e_r`` with
  ``R = source_to_isocenter_mm`` and ``e_r = (-sin beta, cos beta)``; the detector is perpendicular to
  the central ray at distance ``source_to_detector_mm`` from the source, bin ``k`` at
  ``S + source_to_detector_mm e_r + u_k e_u`` with ``e_u = (cos beta, sin beta)``. The central fan ray
  at ``beta`` is the parallel ray at ``theta = beta``, ``u = 0``.

Geometries are frozen, hashable dataclasses; :meth:`cache_key` is a stable hash of their content
used by the operator cache, :meth:`to_dict` / :func:`geometry_from_dict` round-trip through JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, TypeVar

DEFAULT_IMAGE_SIZE = 256
"""Model grid side in pixels when no prior says otherwise (the shipped prior's)."""

DEFAULT_PIXEL_SPACING_MM = 1.0
"""Pixel side used by the sparse-view constructors when none is given."""

PARALLEL_SCAN_RANGE_RAD = math.pi
"""A parallel-beam scan is complete over 180 degrees."""

FAN_SCAN_RANGE_RAD = 2.0 * math.pi
"""A fan-beam full scan covers 360 degrees."""

DEFAULT_SOURCE_TO_ISOCENTER_IN_FOV = 2.0
"""Generic fan preset: source-isocentre distance as a multiple of the image side (FOV)."""

DEFAULT_FAN_MAGNIFICATION = 2.0
"""Generic fan preset: source-detector over source-isocentre distance."""

CLINICAL_SOURCE_TO_ISOCENTER_MM = 595.0
"""Clinical-like preset (Siemens SOMATOM Definition class scanners): source to isocentre, mm."""

CLINICAL_SOURCE_TO_DETECTOR_MM = 1085.6
"""Clinical-like preset: source to detector, mm."""

CLINICAL_FOV_MM = 500.0
"""Clinical-like preset: default reconstruction field of view (image side) in mm."""

_KEY_DIGITS = 32
"""Hex digits of the sha256 kept in :meth:`cache_key`."""

G = TypeVar("G", bound="_BaseGeometry")


def _detector_count_covering(half_width_mm: float, det_spacing_mm: float) -> int:
    """Smallest bin count whose centred detector of bins ``det_spacing_mm`` covers ``+-half_width_mm``."""
    return int(math.ceil(2.0 * half_width_mm / det_spacing_mm - 1e-9))


@dataclass(frozen=True)
class _BaseGeometry:
    """Fields and behaviour common to parallel and fan beam (see the module docstring for axes).

    Attributes:
        image_size: H = W, pixels per side.
        pixel_spacing_mm: pixel side s in mm.
        det_count: number of detector bins D.
        det_spacing_mm: detector bin width d in mm (at the detector for fan beam).
        angles: view angles in radians, V of them (theta for parallel, source angle beta for fan).
    """

    image_size: int
    pixel_spacing_mm: float
    det_count: int
    det_spacing_mm: float
    angles: tuple[float, ...]

    kind: ClassVar[str] = ""
    scan_range_rad: ClassVar[float] = PARALLEL_SCAN_RANGE_RAD

    def __post_init__(self) -> None:
        object.__setattr__(self, "angles", tuple(float(a) for a in self.angles))
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "det_count", int(self.det_count))
        object.__setattr__(self, "pixel_spacing_mm", float(self.pixel_spacing_mm))
        object.__setattr__(self, "det_spacing_mm", float(self.det_spacing_mm))
        where = type(self).__name__
        if self.image_size < 1:
            raise ValueError(f"{where}: image_size must be >= 1, got {self.image_size}")
        if self.det_count < 1:
            raise ValueError(f"{where}: det_count must be >= 1, got {self.det_count}")
        if not (self.pixel_spacing_mm > 0 and self.det_spacing_mm > 0):
            raise ValueError(
                f"{where}: pixel_spacing_mm and det_spacing_mm must be > 0, got "
                f"{self.pixel_spacing_mm} and {self.det_spacing_mm}"
            )
        if len(self.angles) == 0:
            raise ValueError(f"{where}: at least one view angle is needed")
        if not all(math.isfinite(a) for a in self.angles):
            raise ValueError(f"{where}: view angles must be finite")

    @property
    def n_views(self) -> int:
        """Number of views V."""
        return len(self.angles)

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return (self.image_size, self.image_size)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """``(V, D)``."""
        return (self.n_views, self.det_count)

    @property
    def fov_mm(self) -> float:
        """Image side in mm."""
        return self.image_size * self.pixel_spacing_mm

    def detector_positions_mm(self) -> list[float]:
        """Bin centres ``u_k = (k - (D-1)/2) d`` in mm, length D."""
        centre = (self.det_count - 1) / 2.0
        return [(k - centre) * self.det_spacing_mm for k in range(self.det_count)]

    def subset(self: G, view_indices: Sequence[int]) -> G:
        """The same geometry restricted to ``view_indices`` (in the given order)."""
        indices = [int(i) for i in view_indices]
        if not indices:
            raise ValueError("subset needs at least one view index")
        bad = [i for i in indices if not 0 <= i < self.n_views]
        if bad:
            raise IndexError(f"view indices {bad} out of range for {self.n_views} views")
        return replace(self, angles=tuple(self.angles[i] for i in indices))

    def with_angles(self: G, angles: Sequence[float]) -> G:
        """The same geometry with other view angles (radians)."""
        return replace(self, angles=tuple(float(a) for a in angles))

    def same_except_angles(self, other: _BaseGeometry) -> bool:
        """True when ``other`` differs from this geometry at most in its view angles."""
        return type(self) is type(other) and replace(other, angles=self.angles) == self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with a ``"type"`` tag; inverse: :func:`geometry_from_dict`."""
        out = asdict(self)
        out["angles"] = list(self.angles)
        out["type"] = self.kind
        return out

    @classmethod
    def from_dict(cls: type[G], data: dict[str, Any]) -> G:
        """Inverse of :meth:`to_dict`."""
        fields = {k: v for k, v in data.items() if k != "type"}
        if data.get("type", cls.kind) != cls.kind:
            raise ValueError(f"dict of type {data.get('type')!r} is not a {cls.__name__}")
        return cls(**fields)

    def cache_key(self) -> str:
        """Stable hex key of the geometry's content (exact float reprs), for on-disk caches."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_KEY_DIGITS]

    @classmethod
    def _evenly_spaced(cls, n_views: int, arc_rad: float, start_rad: float) -> tuple[float, ...]:
        if n_views < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        return tuple(start_rad + arc_rad * k / n_views for k in range(n_views))


@dataclass(frozen=True)
class ParallelBeamGeometry(_BaseGeometry):
    """2D parallel-beam geometry (see the module docstring for axes and angle convention)."""

    kind: ClassVar[str] = "parallel"
    scan_range_rad: ClassVar[float] = PARALLEL_SCAN_RANGE_RAD

    @classmethod
    def _default_detector(
        cls, image_size: int, pixel_spacing_mm: float, det_count: int | None, det_spacing_mm: float | None
    ) -> tuple[int, float]:
        spacing = pixel_spacing_mm if det_spacing_mm is None else det_spacing_mm
        if det_count is None:
            det_count = _detector_count_covering(image_size * pixel_spacing_mm * math.sqrt(2.0) / 2.0, spacing)
        return det_count, spacing

    @classmethod
    def sparse_view(
        cls,
        n_views: int,
        image_size: int = DEFAULT_IMAGE_SIZE,
        pixel_spacing_mm: float = DEFAULT_PIXEL_SPACING_MM,
        det_count: int | None = None,
        det_spacing_mm: float | None = None,
    ) -> ParallelBeamGeometry:
        """``n_views`` angles ``k pi / n_views`` evenly over 180 degrees.

        The detector defaults to bins of the pixel size covering the image diagonal
        (``ceil(sqrt(2) image_size)`` bins at unit spacing, as ``skimage.transform.radon``).
        """
        det_count, det_spacing_mm = cls._default_detector(image_size, pixel_spacing_mm, det_count, det_spacing_mm)
        angles = cls._evenly_spaced(n_views, PARALLEL_SCAN_RANGE_RAD, 0.0)
        return cls(image_size, pixel_spacing_mm, det_count, det_spacing_mm, angles)

    @classmethod
    def limited_angle(
        cls,
        n_views: int,
        arc_deg: float,
        image_size: int = DEFAULT_IMAGE_SIZE,
        pixel_spacing_mm: float = DEFAULT_PIXEL_SPACING_MM,
        det_count: int | None = None,
        det_spacing_mm: float | None = None,
        start_deg: float = 0.0,
    ) -> ParallelBeamGeometry:
        """``n_views`` angles evenly over ``[start_deg, start_deg + arc_deg)`` (a missing wedge)."""
        det_count, det_spacing_mm = cls._default_detector(image_size, pixel_spacing_mm, det_count, det_spacing_mm)
        angles = cls._evenly_spaced(n_views, math.radians(arc_deg), math.radians(start_deg))
        return cls(image_size, pixel_spacing_mm, det_count, det_spacing_mm, angles)


@dataclass(frozen=True)
class FanBeamGeometry(_BaseGeometry):
    """2D fan-beam geometry with a flat detector (module docstring: axes and angle convention).

    Attributes (besides the common ones):
        source_to_isocenter_mm: R, source to rotation centre.
        source_to_detector_mm: source to the detector plane (> R); ``det_spacing_mm`` is measured there.
    """

    source_to_isocenter_mm: float
    source_to_detector_mm: float

    kind: ClassVar[str] = "fan"
    scan_range_rad: ClassVar[float] = FAN_SCAN_RANGE_RAD

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "source_to_isocenter_mm", float(self.source_to_isocenter_mm))
        object.__setattr__(self, "source_to_detector_mm", float(self.source_to_detector_mm))
        half_diagonal = self.fov_mm * math.sqrt(2.0) / 2.0
        if self.source_to_isocenter_mm <= half_diagonal:
            raise ValueError(
                f"FanBeamGeometry source_to_isocenter_mm={self.source_to_isocenter_mm} "
                f"must exceed the image half-diagonal {half_diagonal:.1f} mm (the source must lie outside the image)"
            )
        if self.source_to_detector_mm <= self.source_to_isocenter_mm:
            raise ValueError("FanBeamGeometry source_to_detector_mm must exceed source_to_isocenter_mm")

    @property
    def magnification(self) -> float:
        """Detector magnification of the isocentre, ``source_to_detector / source_to_isocenter``."""
        return self.source_to_detector_mm / self.source_to_isocenter_mm

    @property
    def isocenter_det_spacing_mm(self) -> float:
        """Bin width projected back to the isocentre, ``d / magnification``."""
        return self.det_spacing_mm / self.magnification

    @classmethod
    def _default_detector(
        cls,
        image_size: int,
        pixel_spacing_mm: float,
        det_count: int | None,
        det_spacing_mm: float | None,
        source_to_isocenter_mm: float,
        source_to_detector_mm: float,
    ) -> tuple[int, float]:
        """Bins of the pixel size at the isocentre; enough of them to see the image's circumscribed circle."""
        magnification = source_to_detector_mm / source_to_isocenter_mm
        spacing = pixel_spacing_mm * magnification if det_spacing_mm is None else det_spacing_mm
        if det_count is None:
            radius = image_size * pixel_spacing_mm * math.sqrt(2.0) / 2.0
            half_fan = math.asin(radius / source_to_isocenter_mm)
            det_count = _detector_count_covering(source_to_detector_mm * math.tan(half_fan), spacing)
        return det_count, spacing

    @classmethod
    def sparse_view(
        cls,
        n_views: int,
        image_size: int = DEFAULT_IMAGE_SIZE,
        pixel_spacing_mm: float = DEFAULT_PIXEL_SPACING_MM,
        det_count: int | None = None,
        det_spacing_mm: float | None = None,
        source_to_isocenter_mm: float | None = None,
        source_to_detector_mm: float | None = None,
    ) -> FanBeamGeometry:
        """``n_views`` source angles ``2 pi k / n_views`` evenly over 360 degrees.

        Distances default to ``DEFAULT_SOURCE_TO_ISOCENTER_IN_FOV`` image sides and magnification
        ``DEFAULT_FAN_MAGNIFICATION``; the detector to bins of one pixel at the isocentre covering the
        image's circumscribed circle.
        """
        r_iso = DEFAULT_SOURCE_TO_ISOCENTER_IN_FOV * image_size * pixel_spacing_mm
        r_iso = r_iso if source_to_isocenter_mm is None else source_to_isocenter_mm
        r_det = DEFAULT_FAN_MAGNIFICATION * r_iso if source_to_detector_mm is None else source_to_detector_mm
        det_count, det_spacing_mm = cls._default_detector(
            image_size, pixel_spacing_mm, det_count, det_spacing_mm, r_iso, r_det
        )
        angles = cls._evenly_spaced(n_views, FAN_SCAN_RANGE_RAD, 0.0)
        return cls(image_size, pixel_spacing_mm, det_count, det_spacing_mm, angles, r_iso, r_det)

    @classmethod
    def limited_angle(
        cls,
        n_views: int,
        arc_deg: float,
        image_size: int = DEFAULT_IMAGE_SIZE,
        pixel_spacing_mm: float = DEFAULT_PIXEL_SPACING_MM,
        start_deg: float = 0.0,
        **distances: Any,
    ) -> FanBeamGeometry:
        """``n_views`` source angles evenly over ``[start_deg, start_deg + arc_deg)``.

        ``distances``: optional ``source_to_isocenter_mm``, ``source_to_detector_mm``, ``det_count``,
        ``det_spacing_mm`` as in :meth:`sparse_view`.
        """
        full = cls.sparse_view(1, image_size, pixel_spacing_mm, **distances)
        return full.with_angles(cls._evenly_spaced(n_views, math.radians(arc_deg), math.radians(start_deg)))

    @classmethod
    def clinical(
        cls,
        n_views: int,
        image_size: int = DEFAULT_IMAGE_SIZE,
        pixel_spacing_mm: float | None = None,
    ) -> FanBeamGeometry:
        """Clinical-like full scan: source-isocentre 595 mm, source-detector 1085.6 mm (flat detector).

        ``pixel_spacing_mm`` defaults to a ``CLINICAL_FOV_MM`` (500 mm) field of view; detector bins
        are one pixel wide at the isocentre and cover the image's circumscribed circle.
        """
        spacing = CLINICAL_FOV_MM / image_size if pixel_spacing_mm is None else pixel_spacing_mm
        return cls.sparse_view(
            n_views,
            image_size,
            spacing,
            source_to_isocenter_mm=CLINICAL_SOURCE_TO_ISOCENTER_MM,
            source_to_detector_mm=CLINICAL_SOURCE_TO_DETECTOR_MM,
        )


Geometry = ParallelBeamGeometry | FanBeamGeometry
"""Any acquisition geometry a projector accepts."""

_GEOMETRY_TYPES: dict[str, type[_BaseGeometry]] = {
    ParallelBeamGeometry.kind: ParallelBeamGeometry,
    FanBeamGeometry.kind: FanBeamGeometry,
}


def geometry_from_dict(data: dict[str, Any]) -> Geometry:
    """Rebuild a geometry from :meth:`to_dict` output, dispatching on its ``"type"`` tag."""
    kind = data.get("type")
    if kind not in _GEOMETRY_TYPES:
        raise ValueError(f"unknown geometry type {kind!r}; expected one of {sorted(_GEOMETRY_TYPES)}")
    return _GEOMETRY_TYPES[kind].from_dict(data)  # type: ignore[return-value]
