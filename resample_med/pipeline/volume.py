"""Volume in, volume out: a CT series -> model-grid slices -> measurements -> reconstruction -> series.

:func:`reconstruct_volume` walks the slices of a :class:`~resample_med.io.CTVolume` resampled to the
model grid (:func:`~resample_med.io.iter_model_slices`), simulates the acquisition on each slice
(noise drawn from a per-slice generator, so results do not depend on batching), reconstructs them
with :func:`~resample_med.pipeline.slices.reconstruct_slices` (``batch_size`` slices at a time, or
slabs with ``volume_mode``; resuming from a checkpoint is its business) and maps every result back
onto the source grid. Memory holds the measurements and model-grid slices of the volume, one batch
and the output volume. :func:`reconstruct_input` is the one dispatch of the command line and the
widget: a volume is simulated and reconstructed, measurements (a sinogram) are reconstructed as
they are.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from resample_med.geometry import DEFAULT_IMAGE_SIZE
from resample_med.io import CTVolume, iter_model_slices
from resample_med.pipeline.acquisition import AcquisitionConfig
from resample_med.pipeline.checkpoint import SliceCheckpoint
from resample_med.pipeline.measurements import Measurements, simulate_measurements
from resample_med.pipeline.seeding import make_generator
from resample_med.pipeline.slabs import VolumeMode
from resample_med.pipeline.slices import SliceProgress, reconstruct_slices
from resample_med.sampling.result import ProgressCallback

if TYPE_CHECKING:
    from resample_med.sampling.prior import LatentPrior
    from resample_med.sampling.registry import ConfigChoice

PER_SLICE_SOURCE_KEYS = ("files", "SOPInstanceUIDs", "ImagePositionPatient")
"""Entries of :attr:`CTVolume.source` that hold one item per slice."""

SINOGRAM_SLICE_SPACING_MM = 1.0
"""Slice gap given to a volume reconstructed from measurements, which know no z geometry."""


@dataclass(frozen=True, eq=False)
class VolumeReconstruction:
    """A reconstructed volume on the source grid.

    Attributes:
        volume: the input :class:`~resample_med.io.CTVolume` with ``hu`` ``(Z, Y, X)`` replaced by
            the reconstruction (geometry and source metadata unchanged).
        std_hu: ``(Z, Y, X)`` posterior std in HU (``n_samples > 1``), else ``None``.
        per_slice: per slice ``index``, ``residual``, ``discrepancy``, ``seconds``, ``resumed`` and,
            against the input as reference, ``psnr`` / ``ssim`` / ``rmse_hu`` on the model grid.
        info: method, acquisition, timings and the mean of each per-slice number.
        measurements: the model-grid :class:`~resample_med.pipeline.measurements.Measurements`
            that were inverted (simulated from ``volume`` by :func:`reconstruct_volume`).
    """

    volume: CTVolume
    std_hu: np.ndarray | None
    per_slice: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    measurements: Measurements | None = None


def reconstruct_volume(
    volume: CTVolume,
    acquisition: AcquisitionConfig | None = None,
    method: str = "resample",
    prior: LatentPrior | None = None,
    config: ConfigChoice = None,
    *,
    batch_size: int = 4,
    n_samples: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    callback: ProgressCallback | None = None,
    on_slices: SliceProgress | None = None,
    checkpoint: SliceCheckpoint | None = None,
    first_index: int = 0,
    volume_mode: VolumeMode | None = None,
) -> VolumeReconstruction:
    """Simulate ``acquisition`` on every slice of ``volume`` and reconstruct it with ``method``.

    Args:
        volume: the CT (its HU are the ground truth of the simulation).
        acquisition: the simulated scanner; ``None`` for :class:`AcquisitionConfig` defaults.
        method, prior, config, n_samples, callback: as in
            :func:`~resample_med.pipeline.slices.reconstruct_slices`.
        batch_size: slices reconstructed together (bounds memory).
        seed: user seed for measurement noise and sampling.
        device: where projector and data live (the prior must already be there).
        on_slices: slice-level progress ``(n_finished, n_total)``.
        checkpoint: where finished slices are kept for resuming; ``None`` keeps nothing.
        first_index: index of slice 0 of ``volume`` in the series it was cut from (seeds,
            checkpoint keys and report rows use series indices, so a chunk of a series gives the
            same slices as the whole series, see :mod:`resample_med.pipeline.studies`).
        volume_mode: reconstruct adjacent slices jointly (:class:`~resample_med.pipeline.slabs.VolumeMode`:
            z weight, slab size, overlap); ``None``: slice by slice. Slabs are cut within ``volume``
            (a chunk of a series is not coupled to the neighbouring chunk).

    Returns:
        :class:`VolumeReconstruction`.
    """
    acquisition = acquisition or AcquisitionConfig()
    if volume_mode is not None and volume_mode.slice_spacing_mm is None:
        volume_mode = dataclasses.replace(volume_mode, slice_spacing_mm=float(volume.spacing_mm[0]))
    image_size = int(getattr(prior, "image_size", DEFAULT_IMAGE_SIZE))
    started = time.perf_counter()
    model_slices = list(iter_model_slices(volume, size=image_size))
    measurements = simulate_model_slices(model_slices, acquisition, seed, device, first_index)
    rec = reconstruct_slices(
        measurements,
        method,
        prior,
        config,
        batch_size=batch_size,
        n_samples=n_samples,
        seed=seed,
        callback=callback,
        checkpoint=checkpoint,
        on_slices=on_slices,
        first_index=first_index + int(model_slices[0].index),
        volume_mode=volume_mode,
    )
    hu_out = np.empty(volume.hu.shape, dtype=np.float32)
    std_out = None if rec.std_hu is None else np.zeros(volume.hu.shape, dtype=np.float32)
    per_slice = []
    for i, model_slice in enumerate(model_slices):
        hu_out[model_slice.index] = model_slice.to_source(rec.hu[i], background=volume.hu[model_slice.index])
        if std_out is not None:
            std_out[model_slice.index] = model_slice.to_source(rec.std_hu[i])  # type: ignore[index]
        row = {k: v for k, v in rec.per_slice[i].items() if k != "index"}
        per_slice.append({"index": first_index + int(model_slice.index), **row})
    info = {
        "method": method,
        "acquisition": acquisition.to_dict(),
        "image_size": image_size,
        "n_slices": int(volume.hu.shape[0]),
        "n_resumed": sum(bool(r["resumed"]) for r in per_slice),
        "seconds_total": time.perf_counter() - started,
        "mean": _means(per_slice),
    }
    if volume_mode is not None:
        info["volume_mode"] = rec.info["volume_mode"]
    return VolumeReconstruction(
        volume=volume.with_hu(hu_out),
        std_hu=std_out,
        per_slice=per_slice,
        info=info,
        measurements=measurements,
    )


def reconstruct_input(
    source: CTVolume | Measurements,
    acquisition: AcquisitionConfig | None = None,
    method: str = "resample",
    prior: LatentPrior | None = None,
    config: ConfigChoice = None,
    *,
    device: torch.device | str | None = None,
    **options: Any,
) -> VolumeReconstruction:
    """Reconstruct a CT volume (simulating ``acquisition`` on it) or measured data, whichever ``source`` is.

    Args:
        source: a :class:`~resample_med.io.CTVolume` in HU (:func:`reconstruct_volume`), or
            :class:`~resample_med.pipeline.measurements.Measurements` (:func:`reconstruct_slices`;
            ``acquisition`` and ``device`` are then those of the measurements).
        acquisition, method, prior, config, device: as in :func:`reconstruct_volume`.
        options: the keyword options :func:`reconstruct_volume` and :func:`reconstruct_slices`
            share (``batch_size``, ``n_samples``, ``seed``, ``callback``, ``on_slices``,
            ``checkpoint``, ``first_index``, ``volume_mode``).

    Returns:
        :class:`VolumeReconstruction`; for measurements its volume is the ``(N, H, W)`` model grid
        of the sinogram (identity orientation, origin 0, slice gap :data:`SINOGRAM_SLICE_SPACING_MM`,
        ``source["format"] == "sinogram"``).
    """
    if isinstance(source, CTVolume):
        return reconstruct_volume(source, acquisition, method, prior, config, device=device, **options)
    started = time.perf_counter()
    rec = reconstruct_slices(source, method, prior, config, **options)
    spacing = float(source.pixel_spacing_mm)
    volume = CTVolume(
        hu=np.asarray(rec.hu, dtype=np.float32),
        spacing_mm=(SINOGRAM_SLICE_SPACING_MM, spacing, spacing),
        origin_mm=np.zeros(3),
        direction=np.eye(3),
        source={"format": "sinogram"},
    )
    info = {
        **rec.info,
        "acquisition": source.acquisition.to_dict(),
        "n_slices": source.n_slices,
        "n_resumed": sum(bool(r["resumed"]) for r in rec.per_slice),
        "seconds_total": time.perf_counter() - started,
        "mean": _means(rec.per_slice),
    }
    return VolumeReconstruction(
        volume=volume, std_hu=rec.std_hu, per_slice=rec.per_slice, info=info, measurements=source
    )


def select_slices(volume: CTVolume, slices: slice) -> CTVolume:
    """The sub-volume of ``volume.hu[slices]`` (a contiguous, ascending range) with its geometry.

    The origin moves to the first kept slice and the per-slice source entries (files, SOP
    instance UIDs, positions) are cut the same way, so a derived series of the sub-volume
    references exactly the source images it was computed from.
    """
    indices = range(volume.n_slices)[slices]
    if len(indices) == 0 or indices.step != 1:
        raise ValueError(f"slice range {slices.start}:{slices.stop} selects no contiguous slices of {volume.n_slices}")
    positions = volume.slice_positions()
    source = dict(volume.source)
    for key in PER_SLICE_SOURCE_KEYS:
        if key in source and len(source[key]) == volume.n_slices:
            source[key] = list(source[key])[indices.start : indices.stop]
    return CTVolume(
        hu=np.ascontiguousarray(volume.hu[indices.start : indices.stop]),
        spacing_mm=volume.spacing_mm,
        origin_mm=np.asarray(positions[indices.start], dtype=np.float64),
        direction=volume.direction,
        source=source,
    )


def simulate_model_slices(
    model_slices: list[Any],
    acquisition: AcquisitionConfig,
    seed: int,
    device: torch.device | str | None = None,
    first_index: int = 0,
) -> Measurements:
    """Measurements of model slices (:class:`~resample_med.io.ModelSlice`, one volume, same grid).

    The noise of slice ``k`` comes from its own generator derived from ``(seed, first_index + k)``,
    so the data of a slice do not depend on which other slices are simulated with it, nor on
    which chunk of its series (starting at series index ``first_index``) it was cut into.
    """
    if not model_slices:
        raise ValueError("no slices to simulate")
    spacing = float(model_slices[0].pixel_spacing_mm)
    parts = [
        simulate_measurements(
            np.asarray(s.hu)[None],
            spacing,
            acquisition,
            generator=make_generator(seed, "noise", first_index + int(s.index), device=device),
            device=device,
        )
        for s in model_slices
    ]
    first = parts[0]
    variances = [p.noise_variance for p in parts if p.noise_variance is not None]
    references = [p.reference_hu for p in parts if p.reference_hu is not None]
    return Measurements(
        sinogram=torch.cat([p.sinogram for p in parts]),
        projector=first.projector,
        acquisition=acquisition,
        pixel_spacing_mm=spacing,
        noise_variance=torch.cat(variances) if len(variances) == len(parts) else None,
        reference_hu=torch.cat(references),
    )


def _means(per_slice: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of every numeric per-slice entry except the index and flags."""
    keys = [k for k, v in per_slice[0].items() if isinstance(v, float)] if per_slice else []
    return {k: float(np.mean([r[k] for r in per_slice if k in r])) for k in keys}
