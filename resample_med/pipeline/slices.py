"""Reconstruct a stack of measured slices with any method of :mod:`resample_med.sampling`.

Slices are processed ``batch_size`` at a time as one ``(B, 1, H, W)`` batch of the linear problem
``y_lin = A_lin x`` (see :mod:`resample_med.pipeline.measurements`); the result is converted back
to HU. Per slice the data residual, the wall time and, when a reference exists, PSNR / SSIM /
HU-RMSE (:mod:`resample_med.metrics`: windowed [-1000, 1000] HU, inside the reconstruction circle)
are recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from resample_med import metrics
from resample_med.io.errors import NonFiniteError
from resample_med.io.hu_checks import non_finite_summary
from resample_med.pipeline.checkpoint import SliceCheckpoint
from resample_med.pipeline.measurements import LinearProblem, Measurements, linearise
from resample_med.pipeline.seeding import slice_generators
from resample_med.sampling import reconstruct, resolve_method_config
from resample_med.sampling.result import ProgressCallback
from resample_med.units import model_to_hu

if TYPE_CHECKING:
    from resample_med.sampling.prior import LatentPrior
    from resample_med.sampling.registry import ConfigChoice

SliceProgress = Callable[[int, int], None]
"""``on_slices(n_finished, n_total)``, called as slices finish (or are restored from a checkpoint)."""


@dataclass(frozen=True, eq=False)
class SliceReconstruction:
    """Reconstructed slices.

    Attributes:
        hu: ``(N, H, W)`` float32 posterior mean (or point estimate) in HU.
        std_hu: ``(N, H, W)`` float32 per-pixel std in HU over ``n_samples`` samples, or ``None``.
        per_slice: one dict per slice: ``index``, ``resumed``, ``residual`` (relative data residual
            ``||A_lin x - y_lin|| / ||y_lin||``), ``discrepancy`` (``||A_lin x - y_lin||^2 / sum_i sigma_i^2``,
            about 1 at the noise level), ``seconds`` and, with a reference, ``psnr`` / ``ssim`` / ``rmse_hu``.
        info: the method, its resolved configuration and what the sampler reported.
    """

    hu: np.ndarray
    std_hu: np.ndarray | None
    per_slice: list[dict[str, float]]
    info: dict[str, Any] = field(default_factory=dict)


def reconstruct_slices(
    measurements: Measurements,
    method: str = "resample",
    prior: LatentPrior | None = None,
    config: ConfigChoice = None,
    *,
    batch_size: int = 4,
    n_samples: int | None = None,
    seed: int = 0,
    callback: ProgressCallback | None = None,
    checkpoint: SliceCheckpoint | None = None,
    on_slices: SliceProgress | None = None,
    first_index: int = 0,
    volume_mode: Any = None,
) -> SliceReconstruction:
    """Reconstruct every slice of ``measurements``.

    Args:
        measurements: ``N`` post-log sinograms ``(N, V, D)`` and their projector.
        method: a name in :data:`resample_med.sampling.METHODS`.
        prior: the latent diffusion prior (a :class:`~resample_med.models.LatentDiffusionBundle`)
            for the diffusion methods; ignored by the classical ones.
        config: the method's config dataclass, a preset name, or ``None`` for its default.
        batch_size: slices per sampler call (memory is bounded by this).
        n_samples: posterior samples per slice (``None``: the config's ``posterior_samples``, 1 for
            methods without); with more than one, ``std_hu`` is returned.
        seed: the user seed; each slice samples with its own generator derived from
            ``(seed, slice index)`` (:mod:`resample_med.pipeline.seeding`), whatever its batch.
        callback: forwarded to the sampler (``ProgressEvent``); raising
            :class:`~resample_med.sampling.ReconstructionCancelled` cancels.
        checkpoint: finished slices are saved there as each batch ends, and slices already
            there are loaded instead of recomputed (resuming after an interruption).
        on_slices: slice-level progress ``(n_finished, n_total)``.
        first_index: index of slice 0 of ``measurements`` in its volume (seeds, checkpoint keys).
        volume_mode: a :class:`~resample_med.pipeline.slabs.VolumeMode` to reconstruct the slices
            (adjacent, in z order) jointly: :func:`~resample_med.pipeline.slabs.reconstruct_slabs`.

    Returns:
        :class:`SliceReconstruction` of all ``N`` slices; ``per_slice`` rows carry ``index`` and
        ``resumed``.

    Raises:
        NonFiniteError: a batch came out with NaN or Inf (the slices before it are checkpointed, it is not).
    """
    if volume_mode is not None:
        from resample_med.pipeline.slabs import reconstruct_slabs  # slabs builds on this module

        return reconstruct_slabs(
            measurements,
            method,
            prior,
            config,
            mode=volume_mode,
            batch_size=batch_size,
            n_samples=n_samples,
            seed=seed,
            callback=callback,
            checkpoint=checkpoint,
            on_slices=on_slices,
            first_index=first_index,
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if getattr(resolve_method_config(method, config), "z_weight", 0):
        raise ValueError(
            "the config's z_weight couples adjacent slices, which slice mode does not keep together: "
            "use volume mode (reconstruct_volume(..., volume_mode=VolumeMode(z_weight=...)), "
            "reconstruct_slabs, or --volume-mode --z-weight on the command line)"
        )
    n_total = measurements.n_slices
    done = {i - first_index for i in checkpoint.done()} if checkpoint is not None else set()
    todo = [i for i in range(n_total) if i not in done]
    problem = linearise(measurements)
    hu: list[np.ndarray | None] = [None] * n_total
    std: list[np.ndarray | None] = [None] * n_total
    rows: list[dict[str, Any]] = [{} for _ in range(n_total)]
    info: dict[str, Any] = {"method": method}
    for i in sorted(done & set(range(n_total))):
        hu[i], std[i], row = checkpoint.load(first_index + i)  # type: ignore[union-attr]
        rows[i] = {**row, "resumed": True}
    n_finished = n_total - len(todo)
    if n_finished and on_slices is not None:
        on_slices(n_finished, n_total)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        part = _reconstruct_batch(
            problem,
            measurements,
            batch,
            method,
            prior,
            config,
            n_samples=n_samples,
            seed=seed,
            callback=callback,
            first_index=first_index + batch[0],
        )
        info = part.info
        for j, i in enumerate(batch):
            hu[i] = part.hu[j]
            std[i] = None if part.std_hu is None else part.std_hu[j]
            rows[i] = {"index": first_index + i, **part.per_slice[j], "resumed": False}
            if checkpoint is not None:
                checkpoint.save(first_index + i, part.hu[j], std[i], rows[i])
        n_finished += len(batch)
        if on_slices is not None:
            on_slices(n_finished, n_total)
    return SliceReconstruction(
        hu=np.stack(hu),  # type: ignore[arg-type]
        std_hu=None if any(s is None for s in std) else np.stack(std),  # type: ignore[arg-type]
        per_slice=rows,
        info=info,
    )


def _reconstruct_batch(
    problem: LinearProblem,
    measurements: Measurements,
    rows: list[int],
    method: str,
    prior: LatentPrior | None,
    config: ConfigChoice,
    *,
    n_samples: int | None,
    seed: int,
    callback: ProgressCallback | None,
    first_index: int,
) -> SliceReconstruction:
    """One sampler call on slices ``rows`` of ``problem``; see :func:`reconstruct_slices`."""
    y = problem.y[rows]
    noise_std = problem.noise_std[rows]
    generator = slice_generators(seed, "sampler", [first_index + r - rows[0] for r in rows], device=y.device)
    started = time.perf_counter()
    rec = reconstruct(
        method,
        y,
        problem.operator,
        prior=prior,
        config=config,
        noise_std=noise_std,
        generator=generator,
        callback=callback,
        n_samples=n_samples,
    )
    seconds_per_slice = (time.perf_counter() - started) / y.shape[0]
    image = rec.image.detach().to(torch.float32)
    hu = model_to_hu(image[:, 0])
    std_hu = None if rec.std is None else model_to_hu(rec.std.detach().to(torch.float32)[:, 0])
    hu_np = hu.cpu().numpy()
    std_np = None if std_hu is None else std_hu.cpu().numpy()
    _require_finite(hu_np, std_np, first_index)
    reference = None if measurements.reference_hu is None else measurements.reference_hu[rows]
    per_slice = _per_slice_report(image, y, problem.operator, noise_std, hu, reference, seconds_per_slice)
    return SliceReconstruction(
        hu=hu_np,
        std_hu=std_np,
        per_slice=per_slice,
        info={"method": method, "sampler": _jsonable(rec.info)},
    )


def _require_finite(hu: np.ndarray, std_hu: np.ndarray | None, first_index: int) -> None:
    """Refuse a batch ``(B, H, W)`` whose reconstruction or std holds NaN or Inf: it is never saved nor written."""
    for values, what in ((hu, "reconstruction"), (std_hu, "posterior std")):
        count, first = (0, None) if values is None else non_finite_summary(values)
        if count and first is not None:
            raise NonFiniteError(
                f"slice {first_index + int(first)}: the {what} holds {count} non-finite value(s) (NaN or Inf); "
                "this batch is neither checkpointed nor written (the method diverged: try other sampler settings)"
            )


def _per_slice_report(
    image: Tensor,
    y: Tensor,
    operator: Any,
    noise_std: Tensor,
    hu: Tensor,
    reference_hu: Tensor | None,
    seconds: float,
) -> list[dict[str, float]]:
    """Residuals, time and (with a reference) PSNR / SSIM / HU-RMSE for each slice of a batch."""
    with torch.no_grad():
        predicted = operator.forward(image)
        discrepancy = (predicted - y).pow(2).flatten(1).sum(dim=1) / noise_std.pow(2).flatten(1).sum(dim=1)
    columns: dict[str, np.ndarray] = {
        "residual": metrics.relative_sinogram_residual(predicted, y).reshape(-1),
        "discrepancy": discrepancy.cpu().numpy(),
    }
    if reference_hu is not None:
        columns["psnr"] = metrics.psnr(hu, reference_hu)
        columns["ssim"] = metrics.ssim(hu, reference_hu)
        columns["rmse_hu"] = metrics.hu_rmse(hu, reference_hu)
    return [{**{k: float(v[i]) for k, v in columns.items()}, "seconds": seconds} for i in range(image.shape[0])]


def _jsonable(value: Any) -> Any:
    """``value`` with tensors and arrays turned into lists/floats, for JSON reports."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
