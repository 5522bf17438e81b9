"""The posterior mean refined by anchored TV: ReSample's last step in the CPU presets.

The mean of a few posterior samples (:mod:`~resample_med.sampling.posterior`) keeps each sample's
own fine noise (a prior that is weaker than the anatomy) and fits the data only to
``final_tau`` times the noise level. The refinement solves, on the normalised problem of
:mod:`~resample_med.sampling.baselines.tv`,

    x* = argmin_x 0.5 ||A~ x - y~||^2 + w TV(x) + (mu / 2) ||x - x_mean||^2,   x >= -1,

a MAP estimate whose prior is TV times a Gaussian centred on the diffusion posterior mean: edges
and flat regions where TV is right, the diffusion prior's structure where the data cannot decide.
``mu -> 0`` gives plain TV, ``mu -> inf`` the mean itself. Not in the paper; its effect is measured
in benchmarks/results/resample_variants.md (refining the TV image itself with the same weights,
the control row there, gains +0.2 dB over TV against the full sampler's +1.1 to +1.5 dB: the gain
is the diffusion prior's).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from torch import Tensor

from resample_med.sampling.baselines import tv
from resample_med.sampling.prior import LinearOperator
from resample_med.sampling.rng import Generator

if TYPE_CHECKING:
    from resample_med.sampling.config import ReSampleConfig


def refine_mean(
    mean: Tensor, y: Tensor, operator: LinearOperator, config: ReSampleConfig, *, generator: Generator
) -> Tensor:
    """``x*`` of the module docstring: ``mean (B, 1, H, W)``, ``y (B, 1, V, D)`` -> ``(B, 1, H, W)``.

    Args:
        config: its ``refine_tv_weight`` is ``w`` (the TV baseline's normalisation; that
            baseline's tuned weight is :data:`~resample_med.sampling.tuned.TV_WEIGHT`),
            ``refine_anchor_weight`` is ``mu``, ``refine_iterations`` the PDHG iterations started
            from ``mean``.
        generator: feeds the power iteration estimating ``||A||``.
    """
    tv_config = replace(
        tv.PRESETS["default"], weight=config.refine_tv_weight, max_iter=config.refine_iterations, report_every=0
    )
    return tv.tv_pdhg(
        y, operator, tv_config, generator=generator, anchor=mean, anchor_weight=config.refine_anchor_weight
    ).image
