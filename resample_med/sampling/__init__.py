"""Reconstruction methods: ReSample (latent diffusion with hard data consistency), its ablations
and the baselines (FBP, CGLS, TV, Latent-DPS), all behind :func:`reconstruct`.

ReSample is composed of small parts: :mod:`~.ddim` (schedule, Tweedie, DDIM step),
:mod:`~.consistency` (latent / pixel hard data consistency), :mod:`~.resampling` (stochastic
resampling), :mod:`~.schedule` (which step runs what), :mod:`~.resample` (the loop) and
:mod:`~.config` (settings and presets).
"""

from resample_med.sampling.config import PRESETS, ReSampleConfig
from resample_med.sampling.prior import LatentPrior, LinearOperator
from resample_med.sampling.registry import METHODS, reconstruct, resolve_method_config
from resample_med.sampling.result import ProgressEvent, Reconstruction, ReconstructionCancelled

__all__ = [
    "METHODS",
    "PRESETS",
    "LatentPrior",
    "LinearOperator",
    "ProgressEvent",
    "ReSampleConfig",
    "Reconstruction",
    "ReconstructionCancelled",
    "reconstruct",
    "resolve_method_config",
]
