"""One reconstruction run of the widget, as a generator for a napari ``thread_worker``.

The run itself is :func:`resample_med.pipeline.reconstruct_input`: for HU slices of an image layer
it simulates the acquisition on the model grid of :func:`resample_med.io.iter_model_slices`,
reconstructs and maps back to the layer's grid so results overlay it (the sinogram layer shows the
measurements it simulated); a sinogram layer (measured data) is reconstructed as it is. Because the pipeline reports progress through a callback,
it runs on a helper thread and :func:`run_reconstruction` relays its :class:`RunUpdate` s: the
generator is what napari's ``GeneratorWorker`` iterates, so every update (progress, decoded
ReSample preview) reaches the GUI thread through the worker's ``yielded`` signal. Setting the
cancel event makes the next pipeline callback raise
:class:`resample_med.sampling.ReconstructionCancelled`, i.e. a run stops within one step.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_plugin._display import format_photons
from resample_med.pipeline.acquisition import AcquisitionConfig

RELAY_POLL_S = 0.05
"""How often the relaying generator wakes up to check whether the helper thread has finished."""

PROGRESS_UNITS = 1000
"""Resolution of the run's progress bar (``done`` counts up to this)."""

PriorLoader = Callable[[str], Any]
"""``device -> prior``: loads the latent diffusion prior (the shipped model by default)."""


def uses_prior(method: str) -> bool:
    """Whether ``method`` needs the latent diffusion prior (:func:`resample_med.sampling.registry.needs_prior`)."""
    from resample_med.sampling.registry import needs_prior

    return needs_prior(method)


def config_fields(method: str, preset: str) -> dict[str, Any]:
    """The top-level settings of ``method``'s ``preset`` config, by name."""
    from resample_med.sampling import resolve_method_config

    config = resolve_method_config(method, preset)
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


@dataclass(frozen=True)
class ReconstructionRequest:
    """What the widget asks for: acquisition, method and sampler settings.

    Attributes:
        acquisition: simulated scanner (geometry, views, photons).
        method: a name in :data:`resample_med.sampling.METHODS`.
        preset: the method's preset name (every method has ``paper``, ``default`` and ``fast``).
        steps: DDIM steps of the diffusion methods (their ``num_steps``).
        gamma: ReSample's resampling variance scale (:attr:`resample_med.sampling.ReSampleConfig.gamma`).
        n_samples: posterior samples per slice (> 1 gives an uncertainty map).
        seed: seeds measurement noise and sampling.
        device: ``"cpu"`` or ``"cuda"``.
        batch_size: slices per sampler call.
        volume_mode: reconstruct the slices jointly, consistent along z
            (:class:`resample_med.pipeline.VolumeMode` with the tuned z weight).
    """

    acquisition: AcquisitionConfig
    method: str
    preset: str
    steps: int
    gamma: float
    n_samples: int = 1
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 4
    volume_mode: bool = False

    def pipeline_volume_mode(self) -> Any:
        """The pipeline's :class:`~resample_med.pipeline.VolumeMode`, or ``None`` for slice mode."""
        from resample_med.pipeline import VolumeMode

        return VolumeMode() if self.volume_mode else None

    def slices_per_call(self) -> int:
        """Slices one sampler call handles (a slab in volume mode), for the progress display."""
        mode = self.pipeline_volume_mode()
        return self.batch_size if mode is None else mode.slab_slices

    def method_config(self) -> Any:
        """The method's config for :func:`resample_med.pipeline.reconstruct_volume`: the named
        preset with ``num_steps`` and ``gamma`` replaced where the method has them (the widget
        enables those controls only then), through :func:`resample_med.sampling.registry.configure`."""
        from resample_med.sampling.registry import configure

        fields = config_fields(self.method, self.preset)
        settings = {"num_steps": self.steps, "gamma": self.gamma}
        return configure(self.method, self.preset, {k: v for k, v in settings.items() if k in fields})

    def describe(self) -> tuple[str, ...]:
        """Short labels of the settings that shape the result, for layer names."""
        acquisition = self.acquisition
        parts = [f"{acquisition.geometry} {acquisition.n_views} views", format_photons(acquisition.photons)]
        parts.append(self.preset)
        fields = config_fields(self.method, self.preset)
        if "num_steps" in fields:
            parts.append(f"{self.steps} steps")
        if "gamma" in fields:
            parts.append(f"gamma {self.gamma:g}")
        if uses_prior(self.method) and self.n_samples > 1:
            parts.append(f"{self.n_samples} samples")
        if uses_prior(self.method) or acquisition.photons is not None:
            parts.append(f"seed {self.seed}")
        if self.volume_mode:
            parts.append("volume mode")
        return tuple(parts)


@dataclass(frozen=True, eq=False)
class SourceSlices:
    """HU slices cut from an image layer.

    Attributes:
        hu: ``(N, Y, X)`` float32 HU.
        spacing_mm: ``(z, y, x)`` voxel spacing (the layer's scale).
        first_index: index along the layer's axis 0 of slice 0 (0 for a 2D layer).
        reference_hu: ``(N, Y, X)`` reference (ground truth) for metrics, or ``None``.
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    first_index: int = 0
    reference_hu: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class SinogramSlices:
    """Post-log sinograms taken from a sinogram layer, with the geometry they were measured in.

    Attributes:
        sinogram: ``(N, V, D)`` post-log line integrals.
        measurement: :class:`MeasurementRecord` of the sinogram.
        reference_hu: ``(N, Y, X)`` reference for metrics on the output grid, or ``None``.
    """

    sinogram: np.ndarray
    measurement: MeasurementRecord
    reference_hu: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class MeasurementRecord:
    """How a sinogram was measured and where its image lies; kept in a sinogram layer's metadata.

    Attributes:
        geometry: :meth:`resample_med.geometry.Geometry.to_dict` of the projection geometry.
        acquisition: the :class:`AcquisitionConfig` (its photons set the noise model).
        pixel_spacing_mm: reconstruction-grid pixel spacing.
        to_source: maps a model-grid slice ``(S, S)`` onto the source image's grid ``(Y, X)``, or
            ``None`` when results stay on the model grid (sinograms measured elsewhere).
    """

    geometry: dict[str, Any]
    acquisition: AcquisitionConfig
    pixel_spacing_mm: float
    to_source: Callable[[np.ndarray], np.ndarray] | None = None

    @classmethod
    def assumed(
        cls, acquisition: AcquisitionConfig, n_views: int, det_count: int, image_size: int, pixel_spacing_mm: float
    ) -> MeasurementRecord:
        """The record of a sinogram measured elsewhere: ``acquisition``'s geometry kind with the
        sinogram's ``n_views`` x ``det_count`` on an ``image_size`` grid of ``pixel_spacing_mm``."""
        acquisition = acquisition.replace(n_views=n_views, det_count=det_count)
        geometry = acquisition.make_geometry(image_size, pixel_spacing_mm)
        return cls(geometry.to_dict(), acquisition, float(pixel_spacing_mm))

    def metadata(self) -> dict[str, Any]:
        """JSON-like part of the record (for reports)."""
        return {
            "geometry": self.geometry,
            "acquisition": self.acquisition.to_dict(),
            "pixel_spacing_mm": self.pixel_spacing_mm,
        }


@dataclass(frozen=True)
class RunUpdate:
    """Progress of a run as the GUI sees it.

    Attributes:
        message: what is running, e.g. ``"sampling 12/20 (slices 1-4 of 8)"``.
        done: progress in units of :data:`PROGRESS_UNITS`.
        preview_hu: ``(Y, X)`` current estimate on the source grid in HU, or ``None``.
        preview_index: slice (relative to ``SourceSlices.first_index``) the preview belongs to.
    """

    message: str
    done: int
    preview_hu: np.ndarray | None = None
    preview_index: int = 0


@dataclass(frozen=True, eq=False)
class RunResult:
    """A finished run, on the source grid.

    Attributes:
        hu: ``(N, Y, X)`` reconstruction in HU.
        std_hu: ``(N, Y, X)`` posterior std in HU or ``None``.
        sinogram: ``(N, V, D)`` post-log sinogram that was inverted.
        measurement: how it was measured (to reconstruct it again from its layer).
        abs_difference_hu: ``|hu - reference|`` ``(N, Y, X)`` or ``None`` without a reference.
        metrics: mean ``psnr`` (dB) and ``ssim`` over slices against the reference, in
            :mod:`resample_med.metrics`' HU window and reconstruction circle (empty without one).
        seconds: wall time of the pipeline call.
        info: what the pipeline reported (method, config, per-slice residuals).
    """

    hu: np.ndarray
    std_hu: np.ndarray | None
    sinogram: np.ndarray
    measurement: MeasurementRecord
    abs_difference_hu: np.ndarray | None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def run_reconstruction(
    request: ReconstructionRequest,
    source: SourceSlices | SinogramSlices,
    prior_loader: PriorLoader,
    cancel: threading.Event,
) -> Generator[RunUpdate, None, RunResult | None]:
    """Run ``request`` on ``source`` on a helper thread and yield its progress.

    Returns the :class:`RunResult`, or ``None`` when ``cancel`` was set (or the generator was
    closed by napari's own cancel) before the run finished. Errors of the run propagate.
    """
    updates: queue.Queue[RunUpdate] = queue.Queue()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="resample-med-run") as executor:
        future: Future[RunResult] = executor.submit(_execute, request, source, prior_loader, cancel, updates.put)
        try:
            while not (future.done() and updates.empty()):
                try:
                    yield updates.get(timeout=RELAY_POLL_S)
                except queue.Empty:
                    continue
        finally:
            # napari's task-manager cancel closes the generator: stop the helper thread too.
            if not future.done():
                cancel.set()
        from resample_med.sampling import ReconstructionCancelled

        try:
            return future.result()
        except ReconstructionCancelled:
            return None


class _ProgressRelay:
    """The pipeline's callbacks: ``ProgressEvent`` s and finished slices -> :class:`RunUpdate` s.

    Raises :class:`resample_med.sampling.ReconstructionCancelled` from inside the pipeline once the
    cancel event is set. ``to_source`` maps a model-grid slice ``(S, S)`` onto the source grid.
    """

    def __init__(
        self,
        n_slices: int,
        batch_size: int,
        to_source: Callable[[np.ndarray], np.ndarray],
        cancel: threading.Event,
        emit: Callable[[RunUpdate], None],
    ) -> None:
        self.n_slices = n_slices
        self.batch_size = batch_size
        self.to_source = to_source
        self.cancel = cancel
        self.emit = emit
        self.finished = 0
        self.done = 0

    def check_cancel(self) -> None:
        """Raise ``ReconstructionCancelled`` if the user cancelled."""
        from resample_med.sampling import ReconstructionCancelled

        if self.cancel.is_set():
            raise ReconstructionCancelled("cancelled from the napari widget")

    def on_slices(self, finished: int, _total: int) -> None:
        """``on_slices`` of :func:`resample_med.pipeline.reconstruct_volume` / ``reconstruct_slices``."""
        self.finished = finished
        self.done = max(self.done, PROGRESS_UNITS * finished // self.n_slices)
        self.emit(RunUpdate(f"{finished}/{self.n_slices} slices done", self.done))
        self.check_cancel()

    def __call__(self, event: Any) -> None:
        """``callback`` of the samplers: progress within the running batch, decoded previews."""
        self.check_cancel()
        batch = min(self.batch_size, self.n_slices - self.finished)
        within = event.step / event.total if event.total else 0.0
        # Stages (sampling, final consistency) each count 0..total: keep the bar from going back.
        self.done = max(self.done, int(PROGRESS_UNITS * (self.finished + batch * within) / self.n_slices))
        message = (
            f"{event.stage} {event.step}/{event.total} "
            f"(slices {self.finished + 1}-{self.finished + batch} of {self.n_slices})"
        )
        preview = None
        if event.preview is not None:
            from resample_med.units import model_to_hu

            preview = self.to_source(model_to_hu(event.preview[0, 0].detach().float().cpu().numpy()))
        self.emit(RunUpdate(message, self.done, preview, self.finished))


def _execute(
    request: ReconstructionRequest,
    source: SourceSlices | SinogramSlices,
    prior_loader: PriorLoader,
    cancel: threading.Event,
    emit: Callable[[RunUpdate], None],
) -> RunResult:
    """The run (helper thread): load the prior if the method needs one, reconstruct, score."""
    import time

    prior = None
    if uses_prior(request.method):
        emit(RunUpdate("loading the prior", 0))
        prior = prior_loader(request.device)
    started = time.perf_counter()
    hu, std_hu, sinogram, measurement, info = _reconstruct(request, source, prior, cancel, emit)
    seconds = time.perf_counter() - started
    abs_difference, scores = None, {}
    if source.reference_hu is not None:
        from resample_med import metrics

        reference = np.asarray(source.reference_hu, dtype=np.float32)
        abs_difference = np.abs(hu - reference)
        scores = {
            "psnr": float(np.mean(metrics.psnr(hu, reference))),
            "ssim": float(np.mean(metrics.ssim(hu, reference))),
        }
    return RunResult(
        hu=hu,
        std_hu=std_hu,
        sinogram=sinogram,
        measurement=measurement,
        abs_difference_hu=abs_difference,
        metrics=scores,
        seconds=seconds,
        info=info,
    )


_Reconstructed = tuple[np.ndarray, "np.ndarray | None", np.ndarray, MeasurementRecord, dict[str, Any]]


def _reconstruct(
    request: ReconstructionRequest,
    source: SourceSlices | SinogramSlices,
    prior: Any,
    cancel: threading.Event,
    emit: Callable[[RunUpdate], None],
) -> _Reconstructed:
    """:func:`resample_med.pipeline.reconstruct_input` on the slices of an image layer (simulated on
    the model grid of :func:`resample_med.io.iter_model_slices`) or on a sinogram layer; results on
    the source grid (a sinogram's when its record knows it, else the model grid), with the
    sinogram that was inverted and how it was measured."""
    from resample_med.pipeline import reconstruct_input

    if isinstance(source, SinogramSlices):
        data, to_source = _measurements(request, source), source.measurement.to_source
    else:
        data, to_source = _volume(request, source, prior)
        emit(RunUpdate("simulating measurements", 0))
    identity: Callable[[np.ndarray], np.ndarray] = np.asarray
    to_grid = to_source or identity
    relay = _ProgressRelay(data.n_slices, request.slices_per_call(), to_grid, cancel, emit)
    relay.check_cancel()
    out = reconstruct_input(
        data,
        request.acquisition,
        request.method,
        prior,
        request.method_config(),
        device=request.device,
        batch_size=request.batch_size,
        n_samples=request.n_samples,
        seed=request.seed,
        callback=relay,
        on_slices=relay.on_slices,
        volume_mode=request.pipeline_volume_mode(),
    )
    if isinstance(source, SinogramSlices):
        hu = np.stack([to_grid(s) for s in out.volume.hu]).astype(np.float32)
        std_hu = None if out.std_hu is None else np.stack([to_grid(s) for s in out.std_hu]).astype(np.float32)
        return hu, std_hu, np.asarray(source.sinogram, dtype=np.float32), source.measurement, out.info
    measured = out.measurements
    assert measured is not None  # reconstruct_volume returns the measurements it simulated
    record = MeasurementRecord(
        geometry=measured.projector.geometry.to_dict(),
        acquisition=request.acquisition,
        pixel_spacing_mm=float(measured.pixel_spacing_mm),
        to_source=to_source,
    )
    sinogram = measured.sinogram.detach().cpu().numpy().astype(np.float32)
    return out.volume.hu, out.std_hu, sinogram, record, out.info


def _volume(request: ReconstructionRequest, source: SourceSlices, prior: Any) -> tuple[Any, Callable[..., np.ndarray]]:
    """The image layer's slices as a :class:`resample_med.io.CTVolume`, and the map of a model-grid
    slice onto their grid (for previews and the sinogram layer's record)."""
    from resample_med.geometry import DEFAULT_IMAGE_SIZE
    from resample_med.io import CTVolume, iter_model_slices

    image_size = int(getattr(prior, "image_size", DEFAULT_IMAGE_SIZE))
    volume = CTVolume(hu=source.hu, spacing_mm=source.spacing_mm, origin_mm=np.zeros(3), direction=np.eye(3))
    return volume, next(iter_model_slices(volume, size=image_size)).to_source


def _measurements(request: ReconstructionRequest, source: SinogramSlices) -> Any:
    """The sinogram layer's data as :class:`resample_med.pipeline.Measurements` with its recorded geometry."""
    import torch

    from resample_med.geometry import geometry_from_dict
    from resample_med.operators import make_projector
    from resample_med.pipeline import Measurements, noise_variance

    record = source.measurement
    projector = make_projector(geometry_from_dict(record.geometry), device=request.device)
    y = torch.as_tensor(np.asarray(source.sinogram, dtype=np.float32), device=projector.device)
    return Measurements(
        sinogram=y,
        projector=projector,
        acquisition=record.acquisition,
        pixel_spacing_mm=record.pixel_spacing_mm,
        noise_variance=noise_variance(y, record.acquisition),
    )
