"""resample-med: sparse-view CT reconstruction with a latent diffusion prior (ReSample, ICLR 2024).

The one engine behind the napari plugin, the ``resample-med`` command line and research scripts.
Submodules: :mod:`geometry`, :mod:`operators`, :mod:`io`, :mod:`models`, :mod:`sampling`,
:mod:`training`, :mod:`metrics`, :mod:`pipeline`, :mod:`cli`.

``resample_med.load_default_model()`` loads the shipped prior offline; it is imported lazily so
that ``import resample_med`` stays light (no diffusers import until a model is needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from resample_med.models import LatentDiffusionBundle


def load_default_model(device: Any = "cpu") -> LatentDiffusionBundle:
    """The shipped default prior (see ``resample_med/default_model/MODEL_CARD.md``), offline."""
    from resample_med.models import load_default_model as _load

    return _load(device=device)
