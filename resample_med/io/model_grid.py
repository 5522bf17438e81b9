"""Resampling axial slices to the square model grid and back.

The model works on ``size x size`` slices (256 x 256 by default) with isotropic pixels. A source
slice of ``Y x X`` pixels at spacing ``(dy, dx)`` mm is mapped so that the physical centres of the
two grids coincide; by default the model spacing fits the larger field-of-view side,
``s = max(Y dy, X dx) / size``, so nothing is cropped and the shorter side is padded with air.
Model pixel ``(a, b)`` samples the source at index coordinates::

    y = (Y - 1) / 2 + (a - (size - 1) / 2) * s / dy,    x = (X - 1) / 2 + (b - (size - 1) / 2) * s / dx

and :meth:`ModelGrid.to_source` applies the inverse map. Values outside the source field of view
are air (-1024 HU). Downsampling first low-pass filters with a Gaussian of
``sigma = (s / d - 1) / 2`` source pixels per axis (the anti-aliasing rule of
``skimage.transform.resize``) so that thin structures do not alias.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from resample_med.geometry import DEFAULT_IMAGE_SIZE
from resample_med.io.volume import CTVolume

AIR_HU = -1024.0
"""HU of air, used outside the source field of view."""


@dataclass(frozen=True)
class ModelGridConfig:
    """How slices are put on the model grid.

    Attributes:
        size: model grid side in pixels.
        pixel_spacing_mm: fixed isotropic model spacing; None fits the larger field-of-view side
            (no cropping). A fixed spacing smaller than that crops around the centre.
        outside_hu: value of model pixels outside the source field of view.
        min_hu: values below are clipped to it (scanner padding outside the reconstruction
            circle, e.g. -2000 or -3024, is not tissue); None keeps them.
        interpolation_order: spline order of the resampling (1 = bilinear).
        anti_alias: Gaussian pre-filter before downsampling.
    """

    size: int = DEFAULT_IMAGE_SIZE
    pixel_spacing_mm: float | None = None
    outside_hu: float = AIR_HU
    min_hu: float | None = AIR_HU
    interpolation_order: int = 1
    anti_alias: bool = True


MODEL_GRID_PRESETS: dict[str, ModelGridConfig] = {
    "default": ModelGridConfig(),
    "keep_padding": ModelGridConfig(min_hu=None),
}
"""Named grid configurations: ``default`` (256, fit FOV, air floor) and ``keep_padding``."""


@dataclass(frozen=True)
class ModelGrid:
    """The map between one source slice grid (Y, X) and the square model grid (size, size).

    Attributes:
        source_shape: (Y, X) of the source slices.
        source_spacing_mm: (dy, dx) of the source slices.
        spacing_mm: isotropic model pixel spacing s.
        config: the :class:`ModelGridConfig` used.
    """

    source_shape: tuple[int, int]
    source_spacing_mm: tuple[float, float]
    spacing_mm: float
    config: ModelGridConfig = field(default_factory=ModelGridConfig)

    @classmethod
    def for_slices(
        cls,
        source_shape: tuple[int, int],
        source_spacing_mm: tuple[float, float],
        config: ModelGridConfig | None = None,
    ) -> ModelGrid:
        """The grid for source slices of ``source_shape`` at ``source_spacing_mm`` (y, x)."""
        config = config or ModelGridConfig()
        y, x = source_shape
        dy, dx = source_spacing_mm
        spacing = config.pixel_spacing_mm or max(y * dy, x * dx) / config.size
        return cls((int(y), int(x)), (float(dy), float(dx)), float(spacing), config)

    @property
    def size(self) -> int:
        """Model grid side in pixels."""
        return self.config.size

    def describe(self) -> str:
        """One sentence for reports and DICOM headers: the model grid and the way back to the source grid."""
        (y, x), (dy, dx) = self.source_shape, self.source_spacing_mm
        kind = {0: "nearest-neighbour", 1: "bilinear"}.get(
            self.config.interpolation_order, f"order-{self.config.interpolation_order} spline"
        )
        return (
            f"Reconstructed on the {self.size}x{self.size} model grid ({self.spacing_mm:.3g} mm pixels) and "
            f"interpolated ({kind}) back to the {x}x{y} source grid ({dx:.3g} x {dy:.3g} mm pixels)."
        )

    def _axis_map(self, axis: int) -> tuple[float, float]:
        """(scale, offset) with source index = scale * model index + offset along ``axis``."""
        n_src, d_src = self.source_shape[axis], self.source_spacing_mm[axis]
        scale = self.spacing_mm / d_src
        return scale, (n_src - 1) / 2 - scale * (self.size - 1) / 2

    def to_model(self, hu: np.ndarray) -> np.ndarray:
        """(Y, X) source HU -> (size, size) float32 model-grid HU."""
        from scipy import ndimage

        hu = np.asarray(hu, dtype=np.float32)
        if hu.shape != self.source_shape:
            raise ValueError(f"slice has shape {hu.shape}, the grid expects {self.source_shape}")
        if self.config.min_hu is not None:
            hu = np.maximum(hu, np.float32(self.config.min_hu))
        (sy, oy), (sx, ox) = self._axis_map(0), self._axis_map(1)
        if self.config.anti_alias and max(sy, sx) > 1:
            hu = ndimage.gaussian_filter(hu, sigma=(max(0.0, (sy - 1) / 2), max(0.0, (sx - 1) / 2)), mode="nearest")
        out = ndimage.affine_transform(
            hu,
            (sy, sx),
            offset=(oy, ox),
            output_shape=(self.size, self.size),
            order=self.config.interpolation_order,
            mode="nearest",
        )
        a = np.arange(self.size)
        inside_y = np.abs(sy * a + oy - (self.source_shape[0] - 1) / 2) <= self.source_shape[0] / 2
        inside_x = np.abs(sx * a + ox - (self.source_shape[1] - 1) / 2) <= self.source_shape[1] / 2
        out[~(inside_y[:, None] & inside_x[None, :])] = self.config.outside_hu
        return out.astype(np.float32, copy=False)

    def to_source(self, hu_model: np.ndarray, background: np.ndarray | float | None = None) -> np.ndarray:
        """(size, size) model-grid values -> (Y, X) float32 on the source grid.

        Source pixels outside the model grid (only when a fixed spacing crops) take
        ``background`` (an (Y, X) array such as the original slice, or a number); default
        ``config.outside_hu``.
        """
        from scipy import ndimage

        hu_model = np.asarray(hu_model, dtype=np.float32)
        if hu_model.shape != (self.size, self.size):
            raise ValueError(f"model slice has shape {hu_model.shape}, expected {(self.size, self.size)}")
        coords, inside = [], []
        for axis in (0, 1):
            scale, offset = self._axis_map(axis)
            n_src = self.source_shape[axis]
            model_coord = (np.arange(n_src) - offset) / scale
            inside.append(np.abs(model_coord - (self.size - 1) / 2) <= self.size / 2)
            # Clamp to the model pixels that lie inside the source field of view, so edge pixels
            # never blend with the air padding of the model grid.
            a = np.arange(self.size)
            covered = a[np.abs(scale * a + offset - (n_src - 1) / 2) <= n_src / 2]
            coords.append(np.clip(model_coord, covered.min(), covered.max()))
        grid_y, grid_x = np.meshgrid(coords[0], coords[1], indexing="ij")
        out = ndimage.map_coordinates(hu_model, (grid_y, grid_x), order=self.config.interpolation_order, mode="nearest")
        inside_y, inside_x = inside
        outside = ~(inside_y[:, None] & inside_x[None, :])
        if outside.any():
            fill = self.config.outside_hu if background is None else background
            out[outside] = np.broadcast_to(np.asarray(fill, dtype=np.float32), out.shape)[outside]
        return out.astype(np.float32, copy=False)

    def to_source_volume(self, hu_model: np.ndarray, background: CTVolume | None = None) -> np.ndarray:
        """(Z, size, size) -> (Z, Y, X), slice by slice (see :meth:`to_source`)."""
        return np.stack(
            [
                self.to_source(s, None if background is None else background.hu[k])
                for k, s in enumerate(np.asarray(hu_model))
            ]
        )


@dataclass(frozen=True, eq=False)
class ModelSlice:
    """One source slice on the model grid.

    Attributes:
        hu: (size, size) float32 HU on the model grid.
        pixel_spacing_mm: isotropic model pixel spacing in mm.
        index: slice index k in the source volume (ascending along the normal).
        position_mm: (3,) LPS ImagePositionPatient of the source slice.
        grid: the :class:`ModelGrid` that maps back.
    """

    hu: np.ndarray
    pixel_spacing_mm: float
    index: int
    position_mm: np.ndarray
    grid: ModelGrid

    def to_source(self, hu_model: np.ndarray, background: np.ndarray | float | None = None) -> np.ndarray:
        """(size, size) model-grid HU (e.g. a reconstruction) -> (Y, X) on the source slice grid."""
        return self.grid.to_source(hu_model, background)


def iter_model_slices(
    volume: CTVolume | str | os.PathLike[str],
    size: int | None = None,
    *,
    config: ModelGridConfig | str | None = None,
    series: str | int | None = None,
) -> Iterator[ModelSlice]:
    """Yield every axial slice resampled to the model grid, in order along the slice normal.

    Args:
        volume: a loaded :class:`CTVolume`, or a DICOM folder/file, which is then decoded one
            slice at a time (bounded memory however many slices the series has).
        size: model grid side; overrides ``config.size`` (default 256).
        config: a :class:`ModelGridConfig` or a name in :data:`MODEL_GRID_PRESETS`.
        series: series selector when ``volume`` is a DICOM path (see ``select_series``).

    Yields:
        :class:`ModelSlice` with ``hu`` (size, size) float32.
    """
    cfg = MODEL_GRID_PRESETS[config] if isinstance(config, str) else (config or ModelGridConfig())
    if size is not None:
        cfg = replace(cfg, size=int(size))
    if isinstance(volume, CTVolume):
        grid = ModelGrid.for_slices(volume.hu.shape[1:], volume.pixel_spacing_mm, cfg)
        positions = volume.slice_positions()
        for k in range(volume.n_slices):
            yield ModelSlice(grid.to_model(volume.hu[k]), grid.spacing_mm, k, positions[k], grid)
        return
    from resample_med.io.dicom_reader import iter_series_slices, open_series

    _, sorted_series = open_series(volume, series)
    _, y, x = sorted_series.shape
    grid = ModelGrid.for_slices((y, x), sorted_series.spacing_mm[1:], cfg)
    for k, hu in iter_series_slices(sorted_series):
        yield ModelSlice(grid.to_model(hu), grid.spacing_mm, k, sorted_series.positions[k], grid)
