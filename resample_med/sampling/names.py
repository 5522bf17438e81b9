"""The names of the reconstruction methods (light: the command line lists them without importing torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resample_med.sampling.config import ResamplingKind

RESAMPLE_VARIANTS: dict[str, ResamplingKind] = {
    "resample": "stochastic",
    "resample_no_resampling": "ddim",
    "resample_stochastic_encoding": "encode",
}
"""ReSample and its ablations, by the ``resampling`` setting each forces."""

METHODS: tuple[str, ...] = ("fbp", "cgls", "tv", "latent_dps", *RESAMPLE_VARIANTS)
"""Every method name :func:`resample_med.sampling.reconstruct` accepts."""
