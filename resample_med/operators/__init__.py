"""Matched CT projectors in pure PyTorch: Joseph forward model, exact adjoint, FBP, noise, torch-radon names.

>>> from resample_med.geometry import ParallelBeamGeometry
>>> from resample_med.operators import make_projector
>>> P = make_projector(ParallelBeamGeometry.sparse_view(60))     # cached in memory and on disk
>>> y = P.forward(mu)          # (..., 256, 256) -> (..., 60, 363) line integrals
>>> x = P.fbp(y)               # filtered backprojection, (..., 256, 256)
"""

from resample_med._lazy import lazy_namespace

_EXPORTS: dict[str, str | None] = {
    "noise": None,
    "torch_radon": None,
    "cache_dir": "cache",
    "cache_info": "cache",
    "clear_disk_cache": "cache",
    "clear_memory_cache": "cache",
    "make_projector": "cache",
    "FILTER_NAMES": "filters",
    "Projector": "projector",
}
"""Public name -> submodule defining it (``None``: a submodule), imported on first use."""

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
