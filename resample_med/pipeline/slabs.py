"""Volume mode: adjacent slices reconstructed jointly, slab by overlapping slab.

Slice mode (:mod:`~resample_med.pipeline.slices`) solves every slice alone, so neighbours can
disagree (flicker and stair-steps in coronal and sagittal reformats). Volume mode couples the
data-consistency steps of adjacent slices along z (ReSample: a quadratic penalty on z
differences, :mod:`resample_med.sampling.zcoupling`; TV: 3-D TV); the prior stays 2-D.

Memory stays bounded: the series is cut into slabs of ``slab_slices`` contiguous slices that
overlap their neighbours by ``overlap`` slices (:func:`slab_ranges`); each slab is one sampler
call (its network evaluations run ``batch_size`` slices at a time, as in slice mode); every slice
draws its sampler noise from its own generator ``(seed, slice index)`` as in slice mode, so a slice
shared by two slabs starts from the same noise in both. Where slabs overlap their results are
blended with linear ramps (:func:`blend_weights`), so no slab border shows. A slice is final (saved
to the checkpoint, counted as done) once every slab covering it has run; on a resume the slabs
covering any unfinished slice run again, and as each slab depends only on its own data and seed,
the result equals an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from resample_med.pipeline.checkpoint import SliceCheckpoint
from resample_med.pipeline.measurements import Measurements, linearise
from resample_med.pipeline.seeding import slice_generators
from resample_med.pipeline.slices import (
    SliceProgress,
    SliceReconstruction,
    _jsonable,
    _per_slice_report,
    _require_finite,
)
from resample_med.sampling import reconstruct, resolve_method_config, tuned
from resample_med.sampling.baselines.tv import TVConfig
from resample_med.sampling.config import ReSampleConfig, posterior_samples
from resample_med.sampling.result import ProgressCallback
from resample_med.units import model_to_hu

if TYPE_CHECKING:
    from resample_med.sampling.prior import LatentPrior
    from resample_med.sampling.registry import ConfigChoice

Z_WEIGHT_DEFAULTS: dict[str, float] = {
    "resample": tuned.RESAMPLE_Z_WEIGHT,
    "resample_no_resampling": tuned.RESAMPLE_Z_WEIGHT,
    "resample_stochastic_encoding": tuned.RESAMPLE_Z_WEIGHT,
    "tv": tuned.TV_Z_WEIGHT,
}
"""Methods with a volume mode and their tuned z weight (the ``z_weight`` field of their config)."""

Z_WEIGHT_SLICE_MM = 1.0
"""Slice spacing the z weights are stated for (they were tuned on 1 mm slices); other spacings
scale them (:func:`z_weight_for_spacing`)."""


@dataclass(frozen=True)
class VolumeMode:
    """How volume mode couples slices.

    Attributes:
        z_weight: the coupling for slices :data:`Z_WEIGHT_SLICE_MM` apart (ReSample: quadratic
            z-difference penalty, normalised by ``||A||^2``; TV: weight of z differences in 3-D
            TV); ``None`` takes the tuned default (:data:`Z_WEIGHT_DEFAULTS`); 0 decouples the
            slices. The config gets it scaled to ``slice_spacing_mm`` (:func:`z_weight_for_spacing`).
        slice_spacing_mm: the slices' spacing; ``None``: :data:`Z_WEIGHT_SLICE_MM` (no scaling).
            :func:`~resample_med.pipeline.volume.reconstruct_volume` fills it from the series.
        slab_slices: contiguous slices solved jointly (bounds the consistency solve's memory).
        overlap: slices shared by adjacent slabs and blended (``0 <= overlap <= slab_slices // 2``);
            each slice is computed ``slab_slices / (slab_slices - overlap)`` times on average
            (the default: 24 / 20 = 1.2, so that volume mode costs at most 1.5x slice mode per
            slice; a slab of 24 slices x 2 posterior samples (fast) holds 48 images of 256^2, a few
            hundred MB of solver state at most).
    """

    z_weight: float | None = None
    slab_slices: int = 24
    overlap: int = 4
    slice_spacing_mm: float | None = None

    def __post_init__(self) -> None:
        if self.slice_spacing_mm is not None and not self.slice_spacing_mm > 0:
            raise ValueError(f"volume mode: slice_spacing_mm must be > 0, got {self.slice_spacing_mm}")
        if self.z_weight is not None and not self.z_weight >= 0:
            raise ValueError(f"volume mode: z_weight must be >= 0 (0 decouples the slices), got {self.z_weight}")
        if self.slab_slices < 1:
            raise ValueError(f"volume mode: slab_slices must be >= 1, got {self.slab_slices}")
        if not 0 <= self.overlap <= self.slab_slices // 2:
            raise ValueError(
                f"volume mode: overlap must lie in [0, slab_slices // 2] = [0, {self.slab_slices // 2}], "
                f"got {self.overlap}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record."""
        return dataclasses.asdict(self)


def coupled_config(method: str, config: ConfigChoice, mode: VolumeMode) -> ReSampleConfig | TVConfig:
    """``method``'s resolved config with the volume mode's ``z_weight`` set.

    Raises:
        ValueError: ``method`` has no volume mode.
    """
    if method not in Z_WEIGHT_DEFAULTS:
        raise ValueError(
            f"method {method!r} has no volume mode (it exists for {', '.join(Z_WEIGHT_DEFAULTS)}); "
            "choose one of those or run slice by slice"
        )
    resolved = resolve_method_config(method, config)
    assert isinstance(resolved, (ReSampleConfig, TVConfig))  # the methods of Z_WEIGHT_DEFAULTS
    weight = Z_WEIGHT_DEFAULTS[method] if mode.z_weight is None else mode.z_weight
    spacing = Z_WEIGHT_SLICE_MM if mode.slice_spacing_mm is None else mode.slice_spacing_mm
    return dataclasses.replace(resolved, z_weight=z_weight_for_spacing(resolved, weight, spacing))


def z_weight_for_spacing(config: ReSampleConfig | TVConfig, z_weight: float, slice_spacing_mm: float) -> float:
    """``z_weight`` (for slices :data:`Z_WEIGHT_SLICE_MM` apart) for slices ``slice_spacing_mm`` apart.

    Both penalties discretise one on the z derivative ``(x_{k+1} - x_k) / dz``: ReSample's
    quadratic ``||D_z x||^2 / dz^2`` scales as ``(1 mm / dz)^2``, 3-D TV's ``|D_z x| / dz`` as
    ``1 mm / dz``; so thicker slices, whose neighbours differ by real anatomy, are coupled less.
    """
    ratio = Z_WEIGHT_SLICE_MM / float(slice_spacing_mm)
    return float(z_weight) * (ratio if isinstance(config, TVConfig) else ratio**2)


def slab_ranges(n_slices: int, slab_slices: int, overlap: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each slab: starts every ``slab_slices - overlap`` slices, the last slab
    cut at the end (so every slice is computed once, plus ``overlap`` per slab border); one slab
    when ``n_slices <= slab_slices``."""
    if n_slices <= slab_slices:
        return [(0, n_slices)]
    return [(s, min(s + slab_slices, n_slices)) for s in range(0, n_slices - overlap, slab_slices - overlap)]


def blend_weights(ranges: list[tuple[int, int]], n_slices: int) -> list[np.ndarray]:
    """Per slab, the weight ``(stop - start,)`` of its result at each of its slices.

    Inside a slab the weight is 1. Over an overlap of ``o >= 2`` slices it ramps linearly from 0 at
    the slab's end to 1 (``0, 1/(o-1), ..., 1``): the end slice of a slab, which has a z neighbour
    on one side only and differs most from the neighbouring slab's version, gets no weight, and
    adjacent slabs cross-fade (``o = 1``: one half each). The weights of every slice sum to 1.
    """
    raw = []
    for k, (start, stop) in enumerate(ranges):
        before = max(0, ranges[k - 1][1] - start) if k > 0 else 0
        after = max(0, stop - ranges[k + 1][0]) if k + 1 < len(ranges) else 0
        j = np.arange(stop - start, dtype=np.float64)
        raw.append(np.minimum.reduce([np.ones_like(j), _ramp(j, before), _ramp(stop - start - 1 - j, after)]))
    total = np.zeros(n_slices)
    for (start, stop), w in zip(ranges, raw):
        total[start:stop] += w
    return [w / total[start:stop] for (start, stop), w in zip(ranges, raw)]


def _ramp(distance: np.ndarray, overlap: int) -> np.ndarray:
    """Weight at ``distance`` slices from a slab end shared over ``overlap`` slices (1 beyond it)."""
    if overlap == 0:
        return np.ones_like(distance)
    if overlap == 1:
        return np.where(distance < 1, 0.5, 1.0)
    return np.clip(distance / (overlap - 1), 0.0, 1.0)


class BatchLimitedPrior:
    """A prior whose network calls run at most ``max_items`` latents/images at a time (a slab is
    larger than a batch; memory stays bounded by the batch as in slice mode). Other attributes
    are the wrapped prior's."""

    def __init__(self, prior: LatentPrior, max_items: int) -> None:
        self._prior = prior
        self._max_items = max(1, int(max_items))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._prior, name)

    def _chunked(self, fn: Any, *tensors: Tensor) -> Tensor:
        n = tensors[0].shape[0]
        if n <= self._max_items:
            return fn(*tensors)
        return torch.cat([fn(*(t[i : i + self._max_items] for t in tensors)) for i in range(0, n, self._max_items)])

    def encode(self, x: Tensor) -> Tensor:
        """``(B, 1, H, W) -> (B, C, h, w)`` in chunks."""
        return self._chunked(self._prior.encode, x)

    def decode(self, z: Tensor) -> Tensor:
        """``(B, C, h, w) -> (B, 1, H, W)`` in chunks (differentiable)."""
        return self._chunked(self._prior.decode, z)

    def predict_noise(self, z: Tensor, t: Tensor) -> Tensor:
        """``eps_theta(z, t)`` in chunks: ``z (B, C, h, w)``, ``t (B,)``."""
        return self._chunked(self._prior.predict_noise, z, t)


def reconstruct_slabs(
    measurements: Measurements,
    method: str = "resample",
    prior: LatentPrior | None = None,
    config: ConfigChoice = None,
    *,
    mode: VolumeMode | None = None,
    batch_size: int = 4,
    n_samples: int | None = None,
    seed: int = 0,
    callback: ProgressCallback | None = None,
    checkpoint: SliceCheckpoint | None = None,
    on_slices: SliceProgress | None = None,
    first_index: int = 0,
) -> SliceReconstruction:
    """Reconstruct contiguous slices in volume mode; the interface of
    :func:`~resample_med.pipeline.slices.reconstruct_slices` plus ``mode``.

    Args:
        measurements: ``N`` post-log sinograms ``(N, V, D)`` of adjacent slices in z order.
        mode: slab size, overlap and z weight (default :class:`VolumeMode`).
        batch_size: slices per network call inside a slab (memory bound, as in slice mode).
        seed: each slice samples with its generator ``(seed, slice index)``, in every slab that holds it.
        checkpoint: slices are saved once final; those there are loaded, and only the slabs
            covering the others run.
        first_index: index of slice 0 of ``measurements`` in its volume (seeds, checkpoint keys).

    Returns:
        :class:`SliceReconstruction`; ``info["volume_mode"]`` records the mode, the z weight used
        and the slabs.

    Raises:
        NonFiniteError: a slab came out with NaN or Inf (its slices are neither checkpointed nor returned).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mode = mode or VolumeMode()
    cfg = coupled_config(method, config, mode)
    n_samples = posterior_samples(cfg, n_samples)
    n_total = measurements.n_slices
    ranges = slab_ranges(n_total, mode.slab_slices, mode.overlap)
    weights = blend_weights(ranges, n_total)
    done = {i - first_index for i in checkpoint.done()} & set(range(n_total)) if checkpoint is not None else set()
    needed = [k for k, (a, b) in enumerate(ranges) if any(i not in done for i in range(a, b))]
    covering = np.zeros(n_total, dtype=int)
    for k in needed:
        covering[ranges[k][0] : ranges[k][1]] += 1
    problem = linearise(measurements)
    limited_prior = None if prior is None else BatchLimitedPrior(prior, batch_size * n_samples)
    hu: list[np.ndarray | None] = [None] * n_total
    std: list[np.ndarray | None] = [None] * n_total
    rows: list[dict[str, Any]] = [{} for _ in range(n_total)]
    for i in sorted(done):
        hu[i], std[i], row = checkpoint.load(first_index + i)  # type: ignore[union-attr]
        rows[i] = {**row, "resumed": True}
    n_finished = len(done)
    image_sum: dict[int, Tensor] = {}
    std_sum: dict[int, Tensor] = {}
    received = np.zeros(n_total, dtype=int)
    info: dict[str, Any] = {"method": method}
    pending_seconds = 0.0
    for k in needed:
        start, stop = ranges[k]
        started = time.perf_counter()
        rec = reconstruct(
            method,
            problem.y[start:stop],
            problem.operator,
            prior=limited_prior,
            config=cfg,
            noise_std=problem.noise_std[start:stop],
            generator=slice_generators(
                seed, "sampler", list(range(first_index + start, first_index + stop)), device=problem.y.device
            ),
            callback=callback,
            n_samples=n_samples,
        )
        info = {"method": method, "sampler": _jsonable(rec.info)}
        final: list[int] = []
        for j, i in enumerate(range(start, stop)):
            if i in done:
                continue
            w = float(weights[k][j])
            image_sum[i] = image_sum.get(i, 0) + w * rec.image[j].detach().float()
            if rec.std is not None:
                std_sum[i] = std_sum.get(i, 0) + w * rec.std[j].detach().float()
            received[i] += 1
            if received[i] == covering[i]:
                final.append(i)
        pending_seconds += time.perf_counter() - started
        if not final:
            continue
        image = torch.stack([image_sum.pop(i) for i in final])
        slice_hu = model_to_hu(image[:, 0])
        slice_std = torch.stack([model_to_hu(std_sum.pop(i)[0]) for i in final]) if std_sum else None
        _require_finite(
            slice_hu.cpu().numpy(), None if slice_std is None else slice_std.cpu().numpy(), first_index + final[0]
        )
        reference = None if measurements.reference_hu is None else measurements.reference_hu[final]
        report = _per_slice_report(
            image,
            problem.y[final],
            problem.operator,
            problem.noise_std[final],
            slice_hu,
            reference,
            pending_seconds / len(final),
        )
        pending_seconds = 0.0
        for j, i in enumerate(final):
            hu[i] = slice_hu[j].cpu().numpy()
            std[i] = None if slice_std is None else slice_std[j].cpu().numpy()
            rows[i] = {"index": first_index + i, **report[j], "resumed": False}
            if checkpoint is not None:
                checkpoint.save(first_index + i, hu[i], std[i], rows[i])  # type: ignore[arg-type]
        n_finished += len(final)
        if on_slices is not None:
            on_slices(n_finished, n_total)
    info["volume_mode"] = {
        **mode.to_dict(),
        "z_weight_used": float(cfg.z_weight),
        "slabs": [list(r) for r in ranges],
        "slabs_run": len(needed),
    }
    return SliceReconstruction(
        hu=np.stack(hu),  # type: ignore[arg-type]
        std_hu=None if any(s is None for s in std) else np.stack(std),  # type: ignore[arg-type]
        per_slice=rows,
        info=info,
    )
