"""PNG previews of HU slices in a chosen display window: one slice, or a contact sheet of several."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resample_med.io.hu_checks import require_finite
from resample_med.io.output_paths import atomic_file, check_output_path, input_paths
from resample_med.io.volume import CTVolume


@dataclass(frozen=True)
class HUWindow:
    """A display window: HU ``center - width/2`` maps to black, ``center + width/2`` to white."""

    center: float
    width: float

    @property
    def lower(self) -> float:
        """HU shown black."""
        return self.center - self.width / 2

    @property
    def upper(self) -> float:
        """HU shown white."""
        return self.center + self.width / 2

    @property
    def limits(self) -> tuple[float, float]:
        """``(lower, upper)`` HU: a viewer's contrast limits."""
        return (self.lower, self.upper)


HU_WINDOWS: dict[str, HUWindow] = {
    "soft_tissue": HUWindow(40.0, 400.0),
    "lung": HUWindow(-600.0, 1500.0),
    "bone": HUWindow(400.0, 1800.0),
    "model": HUWindow(0.0, 2000.0),
    "full": HUWindow(500.0, 3000.0),
    "uncertainty": HUWindow(50.0, 100.0),
    "difference": HUWindow(100.0, 200.0),
}
"""Named windows: soft tissue 40/400, lung -600/1500, bone 400/1800, model [-1000, 1000], full
[-1000, 2000] (air to dense bone), uncertainty [0, 100] HU (posterior std maps), difference
[0, 200] HU (absolute-difference maps). The one table of HU windows (the napari plugin shows these)."""

CLI_WINDOWS: tuple[str, ...] = ("soft-tissue", "lung", "bone", "full")
"""Window names of ``--window`` (a hyphen where :data:`HU_WINDOWS` has an underscore)."""

CONTACT_SHEET_SLICES = 9
"""Slices on a contact sheet (evenly spaced over the volume; all of them when fewer)."""

CONTACT_SHEET_TILE_PX = 256
"""Tiles larger than this are downsampled (nearest neighbour) so that sheets stay small."""

LABEL_HEIGHT_PX = 12
"""Band above each tile holding its slice number."""


def resolve_window(window: str | HUWindow | tuple[float, float]) -> HUWindow:
    """A :class:`HUWindow` from a name in :data:`HU_WINDOWS`, a window, or (center, width)."""
    if isinstance(window, HUWindow):
        return window
    if isinstance(window, str):
        window = window.replace("-", "_")
        if window not in HU_WINDOWS:
            raise KeyError(f"unknown HU window '{window}'; choose from {sorted(HU_WINDOWS)} or give (center, width)")
        return HU_WINDOWS[window]
    center, width = window
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return HUWindow(float(center), float(width))


def to_display(hu: np.ndarray, window: str | HUWindow | tuple[float, float] = "soft_tissue") -> np.ndarray:
    """(..., H, W) HU -> uint8 grey levels in ``window`` (values outside saturate)."""
    w = resolve_window(window)
    scaled = (np.asarray(hu, dtype=np.float32) - w.lower) / w.width
    return np.round(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def write_png_preview(
    image: np.ndarray | CTVolume,
    path: str | os.PathLike[str],
    window: str | HUWindow | tuple[float, float] = "soft_tissue",
    *,
    index: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one slice as an 8-bit greyscale PNG.

    Args:
        image: (H, W) or (Z, H, W) HU (numpy or torch on CPU), or a :class:`CTVolume`.
        path: output .png file (refused inside the volume's input folder).
        window: a name in :data:`HU_WINDOWS`, a :class:`HUWindow` or (center, width).
        index: slice of a 3D input; default the middle slice.
        overwrite: replace an existing file.

    Raises:
        NonFiniteError: the slice holds NaN or Inf (nothing is written).
    """
    from PIL import Image

    inputs = input_paths(image) if isinstance(image, CTVolume) else []
    target = check_output_path(Path(path), inputs, overwrite=overwrite)
    hu = image.hu if isinstance(image, CTVolume) else np.asarray(image)
    if hu.ndim == 3:
        hu = hu[hu.shape[0] // 2 if index is None else index]
    if hu.ndim != 2:
        raise ValueError(f"preview needs (H, W) or (Z, H, W) HU, got shape {np.shape(image)}")
    require_finite(hu, target)
    with atomic_file(target) as temporary:
        Image.fromarray(to_display(hu, window), mode="L").save(temporary, format="PNG")
    return target


def contact_sheet_indices(n_slices: int, n_tiles: int = CONTACT_SHEET_SLICES) -> list[int]:
    """``n_tiles`` slice indices evenly spaced over ``0 .. n_slices - 1`` (every slice when fewer)."""
    if n_slices <= n_tiles:
        return list(range(n_slices))
    return sorted({int(round(i)) for i in np.linspace(0, n_slices - 1, n_tiles)})


def write_contact_sheet(
    image: np.ndarray | CTVolume,
    path: str | os.PathLike[str],
    window: str | HUWindow | tuple[float, float] = "soft_tissue",
    *,
    n_tiles: int = CONTACT_SHEET_SLICES,
    overwrite: bool = False,
) -> Path:
    """Write a grid of evenly spaced slices, each labelled with its slice number, as one PNG.

    Args:
        image: (Z, H, W) or (H, W) HU, or a :class:`CTVolume`.
        path: output .png file (refused inside the volume's input folder).
        window: a name in :data:`HU_WINDOWS` (``soft-tissue`` spelling accepted), a :class:`HUWindow`
            or (center, width).
        n_tiles: how many slices (all of them when the volume has fewer); the grid is about square.
        overwrite: replace an existing file.

    Raises:
        NonFiniteError: a shown slice holds NaN or Inf (nothing is written).
    """
    from PIL import Image, ImageDraw

    inputs = input_paths(image) if isinstance(image, CTVolume) else []
    target = check_output_path(Path(path), inputs, overwrite=overwrite)
    hu = np.asarray(image.hu if isinstance(image, CTVolume) else image)
    if hu.ndim == 2:
        hu = hu[None]
    if hu.ndim != 3 or hu.shape[0] == 0:
        raise ValueError(f"contact sheet needs (Z, H, W) or (H, W) HU, got shape {hu.shape}")
    indices = contact_sheet_indices(hu.shape[0], n_tiles)
    require_finite(hu[indices], target)
    step = max(1, int(np.ceil(max(hu.shape[1:]) / CONTACT_SHEET_TILE_PX)))
    tiles = [to_display(hu[i, ::step, ::step], window) for i in indices]
    rows, cols = _grid(len(tiles))
    height, width = tiles[0].shape
    sheet = Image.new("L", (cols * width, rows * (height + LABEL_HEIGHT_PX)), color=0)
    draw = ImageDraw.Draw(sheet)
    for k, (index, tile) in enumerate(zip(indices, tiles)):
        x, y = (k % cols) * width, (k // cols) * (height + LABEL_HEIGHT_PX)
        sheet.paste(Image.fromarray(tile), (x, y + LABEL_HEIGHT_PX))
        draw.text((x + 2, y), f"slice {index}", fill=255)
    with atomic_file(target) as temporary:
        sheet.save(temporary, format="PNG")
    return target


def _grid(n: int) -> tuple[int, int]:
    """(rows, columns) of an about square grid of ``n`` tiles."""
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols
