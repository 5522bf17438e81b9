"""PNG previews of HU slices in a chosen display window."""

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


HU_WINDOWS: dict[str, HUWindow] = {
    "soft_tissue": HUWindow(40.0, 400.0),
    "lung": HUWindow(-600.0, 1500.0),
    "bone": HUWindow(400.0, 1800.0),
    "model": HUWindow(0.0, 2000.0),
}
"""Named windows: soft tissue 40/400, lung -600/1500, bone 400/1800, model [-1000, 1000]."""


def resolve_window(window: str | HUWindow | tuple[float, float]) -> HUWindow:
    """A :class:`HUWindow` from a name in :data:`HU_WINDOWS`, a window, or (center, width)."""
    if isinstance(window, HUWindow):
        return window
    if isinstance(window, str):
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
