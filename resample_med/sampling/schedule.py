"""Which sampling step runs which hard data consistency (ReSample Sec. 3.3, Alg. 1).

The trajectory of ``S`` steps is split into three consecutive parts: an early part without data
consistency (the image is still mostly noise), a middle part with pixel-space consistency
(cheap, coarse) and a late part with latent-space consistency (on the decoder's manifold).
Inside the last two parts a consistency step runs every ``skip`` steps. Counting steps by the
official code's ``index = S - 1 - i`` (``i`` = 0 first), a step runs consistency when
``index % skip == 0`` and ``index > 0`` (the last step is followed by the final consistency);
it is ``"none"`` when ``index > S - floor(S f_none)``, ``"latent"`` when
``index < floor(S f_latent)`` and ``"pixel"`` otherwise. With fractions ``(1/3, 1/3, 1/3)``
this reproduces the official code exactly, at any ``S``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ConsistencyKind = Literal["none", "pixel", "latent"]

_FRACTION_EPS = 1e-9
"""Keeps ``floor(S * 1/3)`` from losing a step to floating-point rounding."""


@dataclass(frozen=True)
class ScheduleConfig:
    """When consistency runs.

    Attributes:
        skip: run consistency every ``skip`` steps (official 10).
        fractions: ``(none, pixel, latent)`` shares of the trajectory; they must sum to 1
            (official thirds).
        time_travel: unconditional DDIM steps taken ahead before a consistency step, whose
            Tweedie estimate is then made consistent (official 5; 0 = use ``z0_hat`` at ``t``).
        dps_every_step: take the DPS-style gradient step at every step (official ``True``).
    """

    skip: int = 10
    fractions: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    time_travel: int = 5
    dps_every_step: bool = True

    def __post_init__(self) -> None:
        if self.skip < 1:
            raise ValueError(f"consistency schedule: skip must be >= 1, got {self.skip}")
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(
                "consistency schedule: fractions must be three non-negative shares "
                f"(none, pixel, latent) summing to 1, got {self.fractions}"
            )
        if self.time_travel < 0:
            raise ValueError(f"consistency schedule: time_travel must be >= 0, got {self.time_travel}")


@dataclass(frozen=True)
class StepPlan:
    """What step ``i`` does besides the DDIM update.

    Attributes:
        consistency: ``"none"``, ``"pixel"`` or ``"latent"``.
        time_travel: look-ahead steps before the consistency step (0 when there is none).
        dps: whether the DPS-style gradient step is taken.
    """

    consistency: ConsistencyKind
    time_travel: int
    dps: bool


def consistency_kind(step: int, num_steps: int, config: ScheduleConfig) -> ConsistencyKind:
    """The consistency run after sampling step ``step`` (0-based) of ``num_steps``."""
    index = num_steps - 1 - step
    if index <= 0 or index % config.skip != 0:
        return "none"
    f_none, _, f_latent = config.fractions
    if index > num_steps - int(num_steps * f_none + _FRACTION_EPS):
        return "none"
    if index < int(num_steps * f_latent + _FRACTION_EPS):
        return "latent"
    return "pixel"


def plan_steps(num_steps: int, config: ScheduleConfig) -> list[StepPlan]:
    """The :class:`StepPlan` of every step of an ``num_steps``-step trajectory."""
    plans = []
    for step in range(num_steps):
        kind = consistency_kind(step, num_steps, config)
        look_ahead = 0 if kind == "none" else min(config.time_travel, num_steps - 1 - step)
        plans.append(StepPlan(consistency=kind, time_travel=look_ahead, dps=config.dps_every_step))
    return plans
