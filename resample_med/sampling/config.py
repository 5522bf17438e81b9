"""ReSample's settings: one frozen dataclass and named presets.

Every knob of :func:`resample_med.sampling.resample.resample` lives here; ``dataclasses.asdict``
gives a JSON-serialisable record to save beside outputs and :meth:`ReSampleConfig.from_dict`
reads it back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from resample_med.sampling.consistency import LatentConsistencyConfig, PixelConsistencyConfig
from resample_med.sampling.schedule import ScheduleConfig
from resample_med.sampling.warm_start import WARM_STARTS, WarmStart

ResamplingKind = Literal["stochastic", "ddim", "encode"]
FinalConsistency = Literal["latent", "pixel", "none"]


@dataclass(frozen=True)
class ReSampleConfig:
    """All ReSample settings.

    Attributes:
        num_steps: DDIM steps ``S`` (any ``1 <= S <= T``).
        eta: DDIM stochasticity of the unconditional step (official 0).
        gamma: resampling variance scale (eq. 10; ``--gamma`` and the widget's gamma; official 40).
        resampling: ``"stochastic"`` (ReSample), ``"ddim"`` (ablation: deterministic DDIM step
            from ``z0_y``) or ``"encode"`` (ablation: stochastic encoding of ``z0_y``).
        schedule: when consistency, time travel and the DPS step run.
        pixel: pixel-space consistency settings.
        latent: latent-space consistency settings.
        dps_scale: DPS-style step ``z'_{t-1} -= dps_scale * ab_t * grad_{z_t} ||y - A D(z0_hat(z_t))||``
            (official ``0.5 * ab_t``).
        final_consistency: consistency applied to the last latent before decoding.
        final_max_iter: iteration cap of the final consistency.
        final_tau: discrepancy-principle factor of the final consistency (``None``: the ``tau`` of
            its kind, ``pixel.tau`` or ``latent.tau``); above 1 the final fit stops before it puts
            the noise back into the image (a looser fit).
        warm_start: ``"none"`` (start from noise, the paper) or the classical estimate (``"fbp"``,
            ``"tv"``) encoded and noised to step :attr:`warm_start_step` (SDEdit-style,
            :mod:`~resample_med.sampling.warm_start`).
        warm_start_skip_fraction: the fraction of the ``num_steps`` DDIM steps a warm start skips
            (``0 <= f < 1``; more = less noise added to the estimate and fewer network calls). A
            fraction, not a step, so that changing ``num_steps`` keeps the starting noise level;
            must be 0 without a warm start.
        warm_start_tv_iterations: PDHG iterations of the TV estimate a ``"tv"`` warm start encodes
            (TV's own solve runs 150; the start is noised, so fewer suffice).
        posterior_samples: posterior samples drawn per slice when the caller names no count; the
            reconstruction is their mean and their per-pixel std the uncertainty map
            (:mod:`~resample_med.sampling.posterior`). The mean of several samples is a cheap
            estimate of the posterior mean (the MMSE image), sharper in PSNR and SSIM than any one sample.
        refine_tv_weight: TV weight ``w`` of the refinement of the posterior mean by anchored TV
            (:mod:`~resample_med.sampling.refine`; 0: no refinement, the paper). Applied to the
            mean of the samples after the final consistency; the std map stays the samples' spread.
            Per slice (2-D TV) also in volume mode.
        refine_anchor_weight: ``mu`` of that refinement, the pull towards the posterior mean.
        refine_iterations: PDHG iterations of that refinement.
        preview_every: a decoded preview is sent to the callback every this many steps (0: never).
        z_weight: volume mode's coupling along z: every hard data-consistency step (and the final
            fit) also penalises ``z_weight * ||A||^2 * ||x_{k+1} - x_k||^2`` between z-adjacent
            slices of the batch, so they are solved jointly
            (:mod:`~resample_med.sampling.zcoupling`). 0 (every preset): slices independent. Set by
            the volume pipeline (:mod:`resample_med.pipeline.slabs`), whose batches are contiguous
            slices in z order; its tuned default is :data:`resample_med.sampling.tuned.RESAMPLE_Z_WEIGHT`.
    """

    num_steps: int = 500
    eta: float = 0.0
    gamma: float = 40.0
    resampling: ResamplingKind = "stochastic"
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    pixel: PixelConsistencyConfig = field(default_factory=PixelConsistencyConfig)
    latent: LatentConsistencyConfig = field(default_factory=LatentConsistencyConfig)
    dps_scale: float = 0.5
    final_consistency: FinalConsistency = "latent"
    final_max_iter: int = 500
    final_tau: float | None = None
    warm_start: WarmStart = "none"
    warm_start_skip_fraction: float = 0.0
    warm_start_tv_iterations: int = 150
    posterior_samples: int = 1
    refine_tv_weight: float = 0.0
    refine_anchor_weight: float = 0.1
    refine_iterations: int = 40
    preview_every: int = 10
    z_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"ReSample config: num_steps must be >= 1, got {self.num_steps}")
        if self.gamma <= 0:
            raise ValueError(f"ReSample config: gamma must be > 0, got {self.gamma}")
        if self.resampling not in ("stochastic", "ddim", "encode"):
            raise ValueError(f"ReSample config: unknown resampling {self.resampling!r}")
        if self.final_consistency not in ("latent", "pixel", "none"):
            raise ValueError(f"ReSample config: unknown final_consistency {self.final_consistency!r}")
        if self.final_tau is not None and self.final_tau <= 0:
            raise ValueError(f"ReSample config: final_tau must be > 0 or None, got {self.final_tau}")
        if self.posterior_samples < 1:
            raise ValueError(f"ReSample config: posterior_samples must be >= 1, got {self.posterior_samples}")
        if not self.refine_tv_weight >= 0 or not self.refine_anchor_weight >= 0:
            raise ValueError(
                "ReSample config: refine_tv_weight and refine_anchor_weight must be >= 0, got "
                f"{self.refine_tv_weight} and {self.refine_anchor_weight}"
            )
        if self.refine_iterations < 1:
            raise ValueError(f"ReSample config: refine_iterations must be >= 1, got {self.refine_iterations}")
        if not self.z_weight >= 0:
            raise ValueError(f"ReSample config: z_weight must be >= 0, got {self.z_weight}")
        if self.warm_start not in WARM_STARTS:
            raise ValueError(f"ReSample config: unknown warm_start {self.warm_start!r}; choose from {WARM_STARTS}")
        if self.warm_start == "none" and self.warm_start_skip_fraction != 0:
            raise ValueError(
                "ReSample config: warm_start_skip_fraction applies to a warm start only; "
                "set warm_start to 'fbp' or 'tv', or warm_start_skip_fraction to 0"
            )
        if self.warm_start_tv_iterations < 1:
            raise ValueError(
                f"ReSample config: warm_start_tv_iterations must be >= 1, got {self.warm_start_tv_iterations}"
            )
        if not 0 <= self.warm_start_skip_fraction < 1:
            raise ValueError(
                f"ReSample config: warm_start_skip_fraction must lie in [0, 1), got {self.warm_start_skip_fraction}"
            )

    @property
    def warm_start_step(self) -> int:
        """The first step run: ``round(warm_start_skip_fraction * num_steps)``, at most ``num_steps - 1``
        (steps ``0 .. warm_start_step - 1`` are skipped)."""
        return min(round(self.warm_start_skip_fraction * self.num_steps), self.num_steps - 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (nested)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReSampleConfig:
        """Inverse of :meth:`to_dict` (lists read back as tuples)."""
        data = dict(data)
        sched = dict(data.pop("schedule", {}))
        if "fractions" in sched:
            sched["fractions"] = tuple(sched["fractions"])
        return cls(
            schedule=ScheduleConfig(**sched),
            pixel=PixelConsistencyConfig(**data.pop("pixel", {})),
            latent=LatentConsistencyConfig(**data.pop("latent", {})),
            **data,
        )


PAPER = ReSampleConfig(pixel=PixelConsistencyConfig(solver="adamw", max_iter=2000, lr=1e-2))
"""The official code's defaults (500 steps, gamma 40, consistency every 10 steps in the later two
thirds, pixel AdamW lr 1e-2 <= 2000 iterations, latent AdamW lr 5e-3 <= 500 iterations, 5-step
time travel, DPS step 0.5 ab_t at every step, final latent consistency) -- with the bugs fixed
(correct Tweedie estimate, discrepancy stopping when the noise level is known, any step count).
Use ``dataclasses.replace(PAPER, num_steps=50)`` for other step counts."""

DEFAULT = ReSampleConfig(
    num_steps=50,
    gamma=40.0,
    schedule=ScheduleConfig(skip=3, fractions=(0.2, 0.5, 0.3), time_travel=0, dps_every_step=False),
    pixel=PixelConsistencyConfig(solver="cgls", max_iter=30),
    latent=LatentConsistencyConfig(optimizer="adam", lr=1e-2, max_iter=50),
    final_max_iter=100,
    preview_every=5,
)
"""Our balance of quality and speed: 50 DDIM steps, CGLS pixel steps with discrepancy stopping,
short latent fits, no time travel or DPS step (they double the network cost)."""

FAST = ReSampleConfig(
    num_steps=20,
    gamma=40.0,
    schedule=ScheduleConfig(skip=2, fractions=(0.2, 0.8, 0.0), time_travel=0, dps_every_step=False),
    pixel=PixelConsistencyConfig(solver="cgls", max_iter=20),
    latent=LatentConsistencyConfig(optimizer="adam", lr=2e-2, max_iter=10),
    final_consistency="pixel",
    final_max_iter=20,
    final_tau=4.0,
    warm_start="tv",
    warm_start_skip_fraction=0.7,
    warm_start_tv_iterations=80,
    posterior_samples=2,
    refine_tv_weight=0.005,
    refine_anchor_weight=0.03,
    refine_iterations=40,
    preview_every=2,
)
"""The CPU preset: 20-step DDIM grid with CGLS pixel-space consistency every 2nd step after the
first fifth and a final CGLS pixel fit (no decoder back-propagation at all: a 256^2 decoder
backward pass costs seconds per slice on a CPU), started from the TV estimate (80 PDHG
iterations) noised to step 14 (70% of the steps skipped: 6 network steps run), the final fit
stopped at 4x the noise level, the mean of 2 posterior samples, and that mean refined by anchored
TV (half the TV weight, anchor weight 0.03, 40 iterations; chosen on the 4 TV-tuning val slices
at parallel and fan, 20 and 30 views). Each of the last four is measured in
benchmarks/results/resample_variants.md and listed with its effect in the README's method
section; 2 samples, not more, keep the preset within 3x TV's time at batch 16 (speed_cpu.md)."""

FAST_FROM_NOISE = replace(
    FAST, warm_start="none", warm_start_skip_fraction=0.0, final_tau=None, posterior_samples=1, refine_tv_weight=0.0
)
"""``fast`` without its four additions (TV warm start, loose final fit, posterior mean, anchored-TV
refinement): one sample from pure noise, the final fit to the noise level, as the paper starts. Not a preset: the
base of the ablations (benchmarks/resample_variants.py), the sampler of the prior-strength check
(benchmarks/prior_quality.py) and of tests that need the plain sampler."""

PRESETS: dict[str, ReSampleConfig] = {"paper": PAPER, "default": DEFAULT, "fast": FAST}
"""Named ReSample presets."""


def posterior_samples(config: object, n_samples: int | None = None) -> int:
    """Posterior samples per slice a run draws: ``n_samples`` when the caller gives one, else the
    config's ``posterior_samples`` (ReSample's), else 1 (methods without the field)."""
    return int(getattr(config, "posterior_samples", 1)) if n_samples is None else n_samples


def resolve_resample_config(config: ReSampleConfig | str | None) -> ReSampleConfig:
    """A config from an instance, a preset name or ``None`` (``"default"``)."""
    if config is None:
        return DEFAULT
    if isinstance(config, ReSampleConfig):
        return config
    if config in PRESETS:
        return PRESETS[config]
    raise ValueError(f"unknown ReSample preset {config!r}; choose from {sorted(PRESETS)}")
