"""Warm start: begin the reverse process from a classical estimate instead of pure noise.

SDEdit (Meng et al., ICLR 2022) and "Come-Closer-Diffuse-Faster" (Chung, Sim & Ye, CVPR 2022):
a reasonable estimate ``x_init`` of the image, encoded and diffused forward to an intermediate
noise level, already carries the low frequencies the first reverse steps would have to find, so
the reverse process can start there:

    z_{t_k} = sqrt(ab_{t_k}) E(x_init) + sqrt(1 - ab_{t_k}) n,   n ~ N(0, I),

and ReSample runs its steps ``k, k+1, ..., S-1`` from ``z_{t_k}`` (steps ``0..k-1`` are skipped;
their consistency schedule is unchanged for the rest). ``x_init`` is the operator's FBP or the TV
reconstruction (:mod:`resample_med.sampling.baselines.tv`, the tuned weight).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor

from resample_med.sampling.baselines import tv
from resample_med.sampling.prior import LatentPrior, LinearOperator
from resample_med.sampling.resampling import stochastic_encode
from resample_med.sampling.rng import Generator

WarmStart = Literal["none", "fbp", "tv"]
WARM_STARTS: tuple[str, ...] = ("none", "fbp", "tv")
"""``"none"``: pure noise at the first step (the paper); ``"fbp"`` / ``"tv"``: the estimate it names."""


def initial_estimate(
    kind: WarmStart, y: Tensor, operator: LinearOperator, generator: Generator, tv_iterations: int
) -> Tensor:
    """The classical estimate ``x_init (B, 1, H, W)`` in model units from ``y (B, 1, V, D)``.

    ``generator`` feeds TV's power iteration (its only randomness); ``tv_iterations`` caps TV's
    PDHG iterations (the start is noised, so it need not be converged).
    """
    with torch.no_grad():
        if kind == "fbp":
            fbp = getattr(operator, "fbp", None)
            if fbp is None:
                raise ValueError(
                    f"warm_start='fbp' needs an operator with fbp(y); "
                    f"{type(operator).__name__} has none (use warm_start='tv')"
                )
            return fbp(y)
        if kind == "tv":
            config = replace(tv.PRESETS["default"], max_iter=tv_iterations)
            return tv.tv_pdhg(y, operator, config, generator=generator).image
    raise ValueError(f"no initial estimate for warm_start={kind!r}")


def warm_latent(prior: LatentPrior, x_init: Tensor, alpha_bar: float, generator: Generator) -> Tensor:
    """``z_t = sqrt(ab) E(x_init) + sqrt(1 - ab) n`` (module docstring): ``(B, 1, H, W) -> (B, C, h, w)``."""
    with torch.no_grad():
        return stochastic_encode(prior.encode(x_init), alpha_bar_prev=alpha_bar, generator=generator)
