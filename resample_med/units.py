"""Hounsfield units, model units and linear attenuation.

The models and samplers work in *model units* ``x = HU / 1000``: air is -1, water 0, dense bone
about +1 to +3. The projector works on the linear attenuation coefficient
``mu = mu_water * (1 + HU / 1000)`` in 1/mm, so a sinogram of ``mu`` holds dimensionless line
integrals (the ``-log(I / I0)`` of Beer-Lambert).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)

MU_WATER_PER_MM = 0.0192
"""Linear attenuation of water at an effective energy of about 70 keV, in 1/mm."""

HU_PER_MODEL_UNIT = 1000.0
"""Model units are HU divided by this."""


def hu_to_model(hu: ArrayLike) -> ArrayLike:
    """HU -> model units ``x = HU / 1000``; any shape."""
    return hu / HU_PER_MODEL_UNIT


def model_to_hu(x: ArrayLike) -> ArrayLike:
    """Model units -> HU; any shape."""
    return x * HU_PER_MODEL_UNIT


def hu_to_mu(hu: ArrayLike, mu_water: float = MU_WATER_PER_MM) -> ArrayLike:
    """HU -> linear attenuation in 1/mm, ``mu = mu_water (1 + HU/1000)`` clipped at 0."""
    mu = mu_water * (1.0 + hu / HU_PER_MODEL_UNIT)
    return mu.clip(min=0.0) if isinstance(mu, torch.Tensor) else np.clip(mu, 0.0, None)


def mu_to_hu(mu: ArrayLike, mu_water: float = MU_WATER_PER_MM) -> ArrayLike:
    """Linear attenuation in 1/mm -> HU, ``HU = 1000 (mu / mu_water - 1)``."""
    return HU_PER_MODEL_UNIT * (mu / mu_water - 1.0)
