"""What the simulated scanner measures: geometry kind, number of views, dose and detector.

:class:`AcquisitionConfig` is the one frozen description of a (simulated) CT acquisition that the
command line, the napari widget and scripts share; :data:`ACQUISITION_PRESETS` names the common
sparse-view, limited-angle and fan-beam set-ups. :meth:`AcquisitionConfig.make_geometry` turns it
into a :mod:`resample_med.geometry` object for a given image grid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from resample_med.geometry import FanBeamGeometry, Geometry, ParallelBeamGeometry

GeometryKind = Literal["parallel", "fan", "fan-clinical"]
GEOMETRY_KINDS: tuple[str, ...] = ("parallel", "fan", "fan-clinical")

SimulationKind = Literal["matched", "independent"]
SIMULATION_KINDS: tuple[str, ...] = ("matched", "independent")
"""How simulated data are computed: with the reconstruction's own projector (``matched``, the
inverse crime) or with the finer model of :mod:`resample_med.operators.fine_model` (``independent``)."""

FULL_SCAN_DEG: dict[str, float] = {"parallel": 180.0, "fan": 360.0}
"""Arc of a full scan per geometry kind that supports a limited arc."""

DEFAULT_PHOTONS = 1e5
"""Incident photons per detector ray of the default low-dose-but-usable acquisition."""


@dataclass(frozen=True)
class AcquisitionConfig:
    """A simulated CT acquisition.

    Attributes:
        geometry: ``"parallel"`` (views over 180 deg), ``"fan"`` (flat-detector fan beam over 360
            deg) or ``"fan-clinical"`` (fan beam with clinical-like source/detector distances).
        n_views: number of projection angles (the sparse-view factor).
        photons: incident photons per ray ``I0`` for Poisson noise, ``None`` for no Poisson noise.
        gaussian_sigma: std of additive Gaussian noise on the post-log sinogram, ``None`` for none
            (the two noise models exclude each other; both ``None`` is noiseless).
        det_count: detector cells; ``None`` lets the geometry cover the image diagonal.
        det_spacing_mm: detector cell width in mm; ``None`` for the geometry's default.
        arc_deg: limited-angle arc in degrees (up to 180 for ``parallel``, 360 for ``fan``; not for
            ``fan-clinical``); ``None`` for the full scan.
        simulation: ``"matched"`` projects the slice with the reconstruction's own projector;
            ``"independent"`` with a 2x finer grid (bicubic upsampling) and two sub-rays per detector
            bin, same physical scanner (:mod:`resample_med.operators.fine_model`). Only simulation
            uses it; measured sinograms are reconstructed the same way either way.
    """

    geometry: GeometryKind = "parallel"
    n_views: int = 30
    photons: float | None = DEFAULT_PHOTONS
    gaussian_sigma: float | None = None
    det_count: int | None = None
    det_spacing_mm: float | None = None
    arc_deg: float | None = None
    simulation: SimulationKind = "matched"

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRY_KINDS:
            raise ValueError(f"unknown geometry {self.geometry!r}; expected one of {GEOMETRY_KINDS}")
        if self.n_views < 1:
            raise ValueError(f"n_views must be >= 1, got {self.n_views}")
        if self.photons is not None and self.photons <= 0:
            raise ValueError(f"photons must be > 0 or None, got {self.photons}")
        if self.gaussian_sigma is not None and self.gaussian_sigma < 0:
            raise ValueError(f"gaussian_sigma must be >= 0 or None, got {self.gaussian_sigma}")
        if self.simulation not in SIMULATION_KINDS:
            raise ValueError(f"unknown simulation {self.simulation!r}; expected one of {SIMULATION_KINDS}")
        if self.photons is not None and self.gaussian_sigma is not None:
            raise ValueError("choose Poisson noise (photons) or Gaussian noise (gaussian_sigma), not both")
        if self.geometry == "fan-clinical" and (self.det_count is not None or self.det_spacing_mm is not None):
            raise ValueError("fan-clinical fixes its detector; det_count / det_spacing_mm apply to parallel and fan")
        if self.arc_deg is not None:
            if self.geometry not in FULL_SCAN_DEG:
                raise ValueError(
                    f"arc_deg (limited angle) is defined for {sorted(FULL_SCAN_DEG)}, not {self.geometry!r}"
                )
            if not 0 < self.arc_deg <= FULL_SCAN_DEG[self.geometry]:
                raise ValueError(
                    f"arc_deg must be in (0, {FULL_SCAN_DEG[self.geometry]:g}] for {self.geometry}, got {self.arc_deg}"
                )

    def make_geometry(self, image_size: int, pixel_spacing_mm: float) -> Geometry:
        """The projection geometry for an ``image_size`` x ``image_size`` grid of ``pixel_spacing_mm``."""
        detector: dict[str, Any] = {"det_count": self.det_count, "det_spacing_mm": self.det_spacing_mm}
        if self.geometry == "parallel":
            if self.arc_deg is not None:
                return ParallelBeamGeometry.limited_angle(
                    self.n_views, self.arc_deg, image_size=image_size, pixel_spacing_mm=pixel_spacing_mm, **detector
                )
            return ParallelBeamGeometry.sparse_view(
                self.n_views, image_size=image_size, pixel_spacing_mm=pixel_spacing_mm, **detector
            )
        if self.geometry == "fan":
            if self.arc_deg is not None:
                return FanBeamGeometry.limited_angle(
                    self.n_views,
                    self.arc_deg,
                    image_size=image_size,
                    pixel_spacing_mm=pixel_spacing_mm,
                    **{k: v for k, v in detector.items() if v is not None},
                )
            return FanBeamGeometry.sparse_view(
                self.n_views, image_size=image_size, pixel_spacing_mm=pixel_spacing_mm, **detector
            )
        return FanBeamGeometry.clinical(self.n_views, image_size=image_size, pixel_spacing_mm=pixel_spacing_mm)

    def replace(self, **changes: Any) -> AcquisitionConfig:
        """A copy with ``changes`` applied (``None`` values are kept as explicit ``None``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serialisable form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AcquisitionConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown acquisition setting(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


ACQUISITION_PRESETS: dict[str, AcquisitionConfig] = {
    "sparse-30": AcquisitionConfig(geometry="parallel", n_views=30),
    "sparse-60": AcquisitionConfig(geometry="parallel", n_views=60),
    "sparse-15": AcquisitionConfig(geometry="parallel", n_views=15),
    "limited-120": AcquisitionConfig(geometry="parallel", n_views=60, arc_deg=120.0),
    "fan-60": AcquisitionConfig(geometry="fan", n_views=60),
    "fan-clinical-90": AcquisitionConfig(geometry="fan-clinical", n_views=90),
    "noiseless-30": AcquisitionConfig(geometry="parallel", n_views=30, photons=None),
}
"""Named acquisitions; ``sparse-30`` is the default of the CLI and the napari widget."""

DEFAULT_ACQUISITION = "sparse-30"
