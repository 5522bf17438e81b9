"""Matched CT projectors in pure PyTorch: Joseph forward model, exact adjoint, FBP, noise, torch-radon names.

>>> from resample_med.geometry import ParallelBeamGeometry
>>> from resample_med.operators import make_projector
>>> P = make_projector(ParallelBeamGeometry.sparse_view(60))     # cached in memory and on disk
>>> y = P.forward(mu)          # (..., 256, 256) -> (..., 60, 363) line integrals
>>> x = P.fbp(y)               # filtered backprojection, (..., 256, 256)
"""

from resample_med.operators import noise, torch_radon
from resample_med.operators.cache import cache_dir, clear_memory_cache, make_projector
from resample_med.operators.filters import FILTER_NAMES
from resample_med.operators.projector import Projector

__all__ = [
    "FILTER_NAMES",
    "Projector",
    "cache_dir",
    "clear_memory_cache",
    "make_projector",
    "noise",
    "torch_radon",
]
