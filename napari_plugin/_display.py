"""How the plugin shows CT in napari: HU display windows, result layer names and layer placement.

A display window is the radiologist's (level, width) pair in HU, from the one table
:data:`resample_med.io.preview.HU_WINDOWS`; napari's contrast limits are its ``limits``
``(level - width / 2, level + width / 2)``. Placement copies a source layer's scale, translate and
rotation so that reconstructions, uncertainty and difference maps overlay the image they came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from resample_med.io.preview import HU_WINDOWS, HUWindow

if TYPE_CHECKING:
    from napari.layers import Image


WIDGET_WINDOWS: tuple[str, ...] = ("soft_tissue", "lung", "bone", "full")
"""Windows of :data:`resample_med.io.preview.HU_WINDOWS` the widget offers."""

WINDOW_PRESETS: dict[str, HUWindow] = {name.replace("_", " "): HU_WINDOWS[name] for name in WIDGET_WINDOWS}
"""The widget's windows by display name; napari contrast limits are their ``limits``."""

DEFAULT_WINDOW = "soft tissue"

UNCERTAINTY_WINDOW = HU_WINDOWS["uncertainty"]
"""Contrast limits (0, 100) HU for posterior std maps."""

DIFFERENCE_WINDOW = HU_WINDOWS["difference"]
"""Contrast limits (0, 200) HU for absolute-difference maps."""


def format_photons(photons: float | None) -> str:
    """``1e+05 photons`` style label of a dose, ``noiseless`` for ``None``."""
    return "noiseless" if photons is None else f"{photons:.0e} photons"


def result_name(method_label: str, details: tuple[str, ...], kind: str = "") -> str:
    """A layer name such as ``ReSample fast | parallel 30 views | 1e+05 photons | std``."""
    parts = [method_label, *details]
    if kind:
        parts.append(kind)
    return " | ".join(parts)


@dataclass(frozen=True)
class Placement:
    """Where a layer sits in world coordinates: napari ``scale``, ``translate`` and ``rotate``.

    All three are in the layer's axis order; ``rotate`` is an (ndim, ndim) rotation matrix.
    """

    scale: tuple[float, ...]
    translate: tuple[float, ...]
    rotate: np.ndarray

    @classmethod
    def of_layer(cls, layer: Image) -> Placement:
        """The placement of an existing napari image layer."""
        return cls(
            scale=tuple(float(s) for s in layer.scale),
            translate=tuple(float(t) for t in layer.translate),
            rotate=np.asarray(layer.rotate, dtype=float),
        )

    def at_slice(self, index: int) -> Placement:
        """The placement of a one-slice stack ``(1, H, W)`` cut at ``index`` along axis 0 of a 3D layer."""
        offset = np.zeros(len(self.scale))
        offset[0] = index * self.scale[0]
        translate = np.asarray(self.translate) + self.rotate @ offset
        return Placement(self.scale, tuple(float(t) for t in translate), self.rotate)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``viewer.add_image`` / layer data tuples."""
        return {"scale": self.scale, "translate": self.translate, "rotate": self.rotate}
