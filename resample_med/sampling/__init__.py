"""Reconstruction methods: ReSample (latent diffusion with hard data consistency), its ablations
and the baselines (FBP, CGLS, TV, Latent-DPS), all behind :func:`reconstruct`.

ReSample is composed of small parts: :mod:`~.ddim` (schedule, Tweedie, DDIM step),
:mod:`~.consistency` (latent / pixel hard data consistency), :mod:`~.resampling` (stochastic
resampling), :mod:`~.schedule` (which step runs what), :mod:`~.resample` (the loop) and
:mod:`~.config` (settings and presets).
"""

from resample_med._lazy import lazy_namespace

_EXPORTS: dict[str, str | None] = {
    "PRESETS": "config",
    "ReSampleConfig": "config",
    "LatentPrior": "prior",
    "LinearOperator": "prior",
    "METHODS": "names",
    "reconstruct": "registry",
    "resolve_method_config": "registry",
    "ProgressEvent": "result",
    "Reconstruction": "result",
    "ReconstructionCancelled": "result",
}
"""Public name -> submodule defining it (``None``: a submodule), imported on first use."""

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
