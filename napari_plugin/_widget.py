"""The reconstruction dock widget: simulate a sparse-view scan of an HU layer and reconstruct it.

Input is an image layer in HU (a 2D slice, or a 3D volume of which the current slice or all slices
are used) whose acquisition is simulated, or a sinogram layer (one the widget made earlier, which
remembers its geometry, or any ``(views, detectors)`` array taken as measured with the widget's
geometry kind on a 256 x 256 grid of 1 mm pixels).

The widget only collects settings, cuts slices out of the chosen layer and shows results; the run is
:func:`napari_plugin._job.run_reconstruction` (which calls :mod:`resample_med.pipeline`) in a napari
``thread_worker`` with napari's progress bar, so the GUI stays responsive. ReSample's decoded
intermediate estimates update a preview layer while it samples; Cancel stops the run within one step.

Results become layers named by method and settings, with the source layer's scale, translate and
rotation so they overlay it: the reconstruction, the simulated sinogram, the posterior std map
(``n_samples > 1``) and, with a reference layer, the absolute difference; PSNR and SSIM against the
reference are shown in the widget.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    RadioButtons,
    SpinBox,
    create_widget,
)

from napari_plugin._display import (
    DEFAULT_WINDOW,
    DIFFERENCE_WINDOW,
    UNCERTAINTY_WINDOW,
    WINDOW_PRESETS,
    Placement,
    result_name,
)
from napari_plugin._job import (
    PROGRESS_UNITS,
    MeasurementRecord,
    PriorLoader,
    ReconstructionRequest,
    RunResult,
    RunUpdate,
    SinogramSlices,
    SourceSlices,
    config_fields,
    run_reconstruction,
    uses_prior,
)

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

METHOD_LABELS: dict[str, str] = {
    "fbp": "FBP",
    "cgls": "CGLS",
    "tv": "TV",
    "latent_dps": "Latent DPS",
    "resample": "ReSample",
    "resample_no_resampling": "ReSample (no resampling)",
    "resample_stochastic_encoding": "ReSample (stochastic encoding)",
}
"""Display names of :data:`resample_med.sampling.METHODS`; unknown methods show their key."""

SCOPE_SLICE = "current slice"
SCOPE_VOLUME = "whole volume"
PREVIEW_LAYER = "reconstruction preview"
EXTERNAL_PIXEL_SPACING_MM = 1.0
"""Pixel spacing assumed for sinogram layers that this widget did not make."""
SINOGRAM_ORIGIN_KEY = "resample_med_sinogram"
"""Layer-metadata key under which a sinogram layer keeps its :class:`SinogramOrigin`."""

PHOTONS_RANGE: tuple[float, float] = (1e2, 1e8)
N_VIEWS_RANGE: tuple[int, int] = (4, 720)
STEPS_RANGE: tuple[int, int] = (2, 1000)
GAMMA_RANGE: tuple[float, float] = (0.1, 1000.0)
SAMPLES_RANGE: tuple[int, int] = (1, 32)
SEED_RANGE: tuple[int, int] = (0, 2**31 - 1)


@dataclass(frozen=True, eq=False)
class SinogramOrigin:
    """Where a sinogram layer came from, so it can be reconstructed again with other settings.

    Attributes:
        measurement: geometry, acquisition and the model-to-source map of the sinogram.
        placement: placement of the image it was simulated from (results overlay it).
        first_index: index of its first slice in that image (to cut the reference layer).
        image_shape: ``(Y, X)`` of that image's slices.
    """

    measurement: MeasurementRecord
    placement: Placement
    first_index: int
    image_shape: tuple[int, int]


def load_default_prior(device: str) -> Any:
    """The shipped latent diffusion prior (:func:`resample_med.models.load_default_model`)."""
    from resample_med.models import load_default_model

    return load_default_model(device=device)


def _available_devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


class ReconstructionWidget(Container):
    """Dock widget: acquisition, method and sampler settings, Run / Cancel, window presets, metrics.

    Attributes:
        prior_loader: ``device -> prior``; :func:`load_default_prior` unless replaced (tests inject
            a tiny untrained bundle). Loaded priors are cached per device.
        worker: the running napari ``GeneratorWorker`` or ``None``.
        last_result: the :class:`~napari_plugin._job.RunResult` of the last finished run.
        last_layers: the layers the last run added, by kind (``image``, ``sinogram``, ``std``,
            ``difference``).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from napari.layers import Image

        from resample_med.pipeline.acquisition import (
            ACQUISITION_PRESETS,
            DEFAULT_ACQUISITION,
            GEOMETRY_KINDS,
        )
        from resample_med.sampling import METHODS, PRESETS
        from resample_med.sampling.registry import default_preset

        super().__init__(labels=True)
        self.viewer = napari_viewer
        self._priors: dict[str, Any] = {}
        self._prior_loader: PriorLoader = load_default_prior
        self.worker: Any = None
        self.last_result: RunResult | None = None
        self.last_layers: dict[str, Image] = {}
        self._cancel = threading.Event()
        defaults = ACQUISITION_PRESETS[DEFAULT_ACQUISITION]
        preset_names = list(PRESETS)
        preset = default_preset("cpu")  # the device selector starts on the CPU

        self.image = create_widget(annotation=Image, label="image (HU)")
        self.sinogram = create_widget(annotation=Image | None, label="or sinogram", options={"value": None})
        self.reference = create_widget(annotation=Image | None, label="reference", options={"value": None})
        self.geometry = ComboBox(choices=list(GEOMETRY_KINDS), value=defaults.geometry, label="geometry")
        self.n_views = SpinBox(value=defaults.n_views, min=N_VIEWS_RANGE[0], max=N_VIEWS_RANGE[1], label="views")
        self.noise = CheckBox(value=defaults.photons is not None, text="Poisson noise", label="noise")
        self.photons = FloatSpinBox(
            value=defaults.photons or 1e5,
            min=PHOTONS_RANGE[0],
            max=PHOTONS_RANGE[1],
            step=1e4,
            label="photons / ray",
        )
        self.method = ComboBox(
            choices=[(METHOD_LABELS.get(m, m), m) for m in METHODS],
            value="resample" if "resample" in METHODS else METHODS[0],
            label="method",
        )
        self.preset = ComboBox(choices=preset_names, value=preset, label="preset")
        self.steps = SpinBox(value=PRESETS[preset].num_steps, min=STEPS_RANGE[0], max=STEPS_RANGE[1], label="steps")
        self.gamma = FloatSpinBox(
            value=PRESETS[preset].gamma,
            min=GAMMA_RANGE[0],
            max=GAMMA_RANGE[1],
            step=1.0,
            label="gamma (resampling variance)",
        )
        self.n_samples = SpinBox(
            value=PRESETS[preset].posterior_samples,
            min=SAMPLES_RANGE[0],
            max=SAMPLES_RANGE[1],
            label="posterior samples",
        )
        self.seed = SpinBox(value=0, min=SEED_RANGE[0], max=SEED_RANGE[1], label="seed")
        self.device = ComboBox(choices=_available_devices(), value="cpu", label="device")
        self.scope = RadioButtons(choices=[SCOPE_SLICE, SCOPE_VOLUME], value=SCOPE_SLICE, label="reconstruct")
        self.volume_mode = CheckBox(value=False, text="consistent along z (volume mode)", label="")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.window = ComboBox(choices=list(WINDOW_PRESETS), value=DEFAULT_WINDOW, label="window")
        self.status = Label(value="ready", label="status")
        self.scores = Label(value="-", label="PSNR / SSIM")
        self.extend(
            [
                self.image,
                self.sinogram,
                self.reference,
                self.geometry,
                self.n_views,
                self.noise,
                self.photons,
                self.method,
                self.preset,
                self.steps,
                self.gamma,
                self.n_samples,
                self.seed,
                self.device,
                self.scope,
                self.volume_mode,
                self.run_button,
                self.cancel_button,
                self.window,
                self.status,
                self.scores,
            ]
        )

        self.noise.changed.connect(self._sync_enabled)
        self.scope.changed.connect(self._sync_enabled)
        self.method.changed.connect(lambda: self._on_preset(self.preset.value))
        self.preset.changed.connect(self._on_preset)
        self.window.changed.connect(self._on_window)
        self.run_button.clicked.connect(self._on_run_clicked)
        self.cancel_button.clicked.connect(self.cancel)
        self._sync_enabled()

    @property
    def prior_loader(self) -> PriorLoader:
        """``device -> prior``; replacing it drops the priors loaded so far."""
        return self._prior_loader

    @prior_loader.setter
    def prior_loader(self, loader: PriorLoader) -> None:
        self._prior_loader = loader
        self._priors.clear()

    # ----------------------------------------------------------------------------------- settings
    def request(self) -> ReconstructionRequest:
        """The widget's current settings as a :class:`~napari_plugin._job.ReconstructionRequest`."""
        from resample_med.pipeline.acquisition import AcquisitionConfig

        acquisition = AcquisitionConfig(
            geometry=self.geometry.value,
            n_views=int(self.n_views.value),
            photons=float(self.photons.value) if self.noise.value else None,
        )
        return ReconstructionRequest(
            acquisition=acquisition,
            method=self.method.value,
            preset=self.preset.value,
            steps=int(self.steps.value),
            gamma=float(self.gamma.value),
            n_samples=int(self.n_samples.value),
            seed=int(self.seed.value),
            device=self.device.value,
            volume_mode=bool(self.volume_mode.enabled and self.volume_mode.value),
        )

    def _sync_enabled(self, *_: Any) -> None:
        """Enable steps / gamma only where the method has them, samples for the diffusion methods
        and photons only with noise."""
        self.photons.enabled = bool(self.noise.value)
        fields = config_fields(self.method.value, self.preset.value)
        self.steps.enabled = "num_steps" in fields
        self.gamma.enabled = "gamma" in fields
        self.n_samples.enabled = uses_prior(self.method.value)
        # volume mode couples the slices of a whole-volume run; ReSample and TV have it
        self.volume_mode.enabled = "z_weight" in fields and self.scope.value == SCOPE_VOLUME

    def _on_preset(self, name: str) -> None:
        """Load the preset's steps, gamma and posterior samples (where the method has them) into the widget."""
        fields = config_fields(self.method.value, name)
        if "num_steps" in fields:
            self.steps.value = fields["num_steps"]
        if "gamma" in fields:
            self.gamma.value = fields["gamma"]
        if "posterior_samples" in fields:
            self.n_samples.value = fields["posterior_samples"]
        self._sync_enabled()

    def _on_window(self, name: str) -> None:
        """Apply an HU window preset to the source layer and every HU result layer."""
        limits = WINDOW_PRESETS[name].limits
        targets = [self.image.value, self.last_layers.get("image")]
        if PREVIEW_LAYER in self.viewer.layers:
            targets.append(self.viewer.layers[PREVIEW_LAYER])
        for layer in targets:
            if layer is not None:
                layer.contrast_limits = limits

    # ------------------------------------------------------------------------------------- running
    def _inputs(self) -> tuple[SourceSlices | SinogramSlices, Placement]:
        """What to reconstruct (the sinogram layer if one is chosen, else the image layer) and the
        placement of the results."""
        if self.sinogram.value is not None:
            return self._sinogram_slices()
        return self._source_slices()

    def _source_slices(self) -> tuple[SourceSlices, Placement]:
        """HU slices of the image layer (the current one or all) and the placement of the results."""
        layer = self.image.value
        if layer is None:
            raise ValueError("choose an image layer (HU) or a sinogram layer to reconstruct")
        data = np.asarray(layer.data, dtype=np.float32)
        placement = Placement.of_layer(layer)
        if data.ndim == 2:
            spacing = (1.0, *placement.scale)
            return SourceSlices(data[None], spacing, 0, self._reference_slices(0, data[None].shape)), placement
        if data.ndim != 3:
            raise ValueError(f"layer {layer.name!r} has {data.ndim} dimensions; expected a 2D slice or a 3D volume")
        spacing = tuple(float(s) for s in placement.scale)
        if self.scope.value == SCOPE_VOLUME:
            return SourceSlices(data, spacing, 0, self._reference_slices(0, data.shape)), placement
        index = int(round(layer.world_to_data(self.viewer.dims.point)[0]))
        index = int(np.clip(index, 0, data.shape[0] - 1))
        cut = data[index : index + 1]
        return SourceSlices(cut, spacing, index, self._reference_slices(index, cut.shape)), placement.at_slice(index)

    def _sinogram_slices(self) -> tuple[SinogramSlices, Placement]:
        """Sinograms ``(N, V, D)`` of the sinogram layer and the placement of the results.

        A sinogram this widget made carries its measurement record and the source image's
        placement; any other is taken as measured with the widget's geometry kind on a
        :data:`DEFAULT_IMAGE_SIZE` grid of :data:`EXTERNAL_PIXEL_SPACING_MM`, results on that grid.
        """
        from resample_med.geometry import DEFAULT_IMAGE_SIZE

        layer = self.sinogram.value
        data = np.asarray(layer.data, dtype=np.float32)
        flat = data.ndim == 2
        data = data[None] if flat else data
        if data.ndim != 3:
            raise ValueError(f"sinogram layer {layer.name!r} must be (views, detectors) or (slices, views, detectors)")
        origin = layer.metadata.get(SINOGRAM_ORIGIN_KEY)
        if origin is None:
            record = MeasurementRecord.assumed(
                self.request().acquisition, data.shape[1], data.shape[2], DEFAULT_IMAGE_SIZE, EXTERNAL_PIXEL_SPACING_MM
            )
            spacing = record.pixel_spacing_mm
            ndim = 2 if flat else 3
            placement = Placement(
                scale=(spacing, spacing) if flat else (float(layer.scale[0]), spacing, spacing),
                translate=(0.0, 0.0) if flat else (float(layer.translate[0]), 0.0, 0.0),
                rotate=np.eye(ndim),
            )
            origin = SinogramOrigin(record, placement, 0, (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE))
        shape = (data.shape[0], *origin.image_shape)
        reference = self._reference_slices(origin.first_index, shape)
        return SinogramSlices(data, origin.measurement, reference), origin.placement

    def _reference_slices(self, first_index: int, shape: tuple[int, ...]) -> np.ndarray | None:
        """Slices ``first_index, ...`` of the reference layer matching the result ``shape`` (N, Y, X)."""
        layer = self.reference.value
        if layer is None:
            return None
        data = np.asarray(layer.data, dtype=np.float32)
        data = data[None] if data.ndim == 2 else data[first_index : first_index + shape[0]]
        if data.shape != tuple(shape):
            raise ValueError(
                f"reference layer {layer.name!r} gives slices of shape {data.shape}, the result has {tuple(shape)}"
            )
        return data

    def _prior(self, device: str) -> Any:
        """Load (once per device) the prior; runs on the worker's helper thread."""
        if device not in self._priors:
            self._priors[device] = self.prior_loader(device)
        return self._priors[device]

    def run(self) -> Any:
        """Start a reconstruction with the current settings; returns the napari worker."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise RuntimeError("a reconstruction is already running; cancel it first")
        request = self.request()
        source, placement = self._inputs()
        self._cancel = threading.Event()
        label = METHOD_LABELS.get(request.method, request.method)
        worker = create_worker(
            run_reconstruction,
            request,
            source,
            self._prior,
            self._cancel,
            _progress={"desc": f"{label} reconstruction", "total": 0},
        )
        # Qt may deliver a queued update after the result; updates of a finished run are dropped.
        worker.yielded.connect(lambda update: self._on_update(update, placement) if self.worker is worker else None)
        identity = self._dicom_identity() if isinstance(source, SourceSlices) else {}
        worker.returned.connect(lambda result: self._on_result(result, request, placement, source, identity))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._finish)  # also after napari's own task-manager cancel
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = f"running {label}"
        self.scores.value = "-"
        worker.start()
        return worker

    def _on_run_clicked(self) -> None:
        """Run button: start a run, or show why it cannot start."""
        try:
            self.run()
        except (ValueError, RuntimeError) as error:
            self.status.value = f"cannot run: {error}"

    def cancel(self) -> None:
        """Ask the running reconstruction to stop at its next step."""
        self._cancel.set()
        self.status.value = "cancelling"

    def _on_update(self, update: RunUpdate, placement: Placement) -> None:
        """GUI thread: progress bar, status text and the preview layer."""
        pbar = getattr(self.worker, "pbar", None)
        if pbar is not None:
            if pbar.total != PROGRESS_UNITS:
                pbar.total = PROGRESS_UNITS
            pbar.update(update.done - pbar.n)
            pbar.set_description(update.message)
        if not self._cancel.is_set():
            self.status.value = update.message
        if update.preview_hu is not None:
            self._show_preview(update.preview_hu, update.preview_index, placement)

    def _show_preview(self, preview_hu: np.ndarray, index: int, placement: Placement) -> None:
        """Show a decoded intermediate estimate (Y, X) at slice ``index`` of the run."""
        ndim = len(placement.scale)
        data = preview_hu if ndim == 2 else preview_hu[None]
        where = placement if ndim == 2 else placement.at_slice(index)
        if PREVIEW_LAYER in self.viewer.layers:
            layer = self.viewer.layers[PREVIEW_LAYER]
            layer.data = data
            layer.translate = where.translate
        else:
            self.viewer.add_image(
                data,
                name=PREVIEW_LAYER,
                colormap="gray",
                contrast_limits=WINDOW_PRESETS[self.window.value].limits,
                **where.kwargs(),
            )

    def _dicom_identity(self) -> dict[str, Any]:
        """The image layer's DICOM identity (study, frame of reference, patient, direction) from our reader,
        copied onto result layers so that saving one as a derived series keeps it in the source's study."""
        layer = self.image.value
        metadata = layer.metadata if layer is not None else {}
        return {key: metadata[key] for key in ("source", "direction") if key in metadata}

    def _on_result(
        self,
        result: RunResult | None,
        request: ReconstructionRequest,
        placement: Placement,
        source: SourceSlices | SinogramSlices,
        identity: dict[str, Any] | None = None,
    ) -> None:
        """GUI thread: add the result layers and show the metrics (or report cancellation)."""
        self._finish()
        if result is None:
            self.status.value = "cancelled"
            return
        self.last_result = result
        label = METHOD_LABELS.get(request.method, request.method)
        details = dataclasses.replace(request, acquisition=result.measurement.acquisition).describe()
        squeeze = len(placement.scale) == 2

        def shaped(array: np.ndarray) -> np.ndarray:
            return array[0] if squeeze else array

        layers: dict[str, Image] = {}
        layers["image"] = self.viewer.add_image(
            shaped(result.hu),
            name=result_name(label, details),
            colormap="gray",
            contrast_limits=WINDOW_PRESETS[self.window.value].limits,
            **placement.kwargs(),
            metadata={"units": "HU", "method": request.method, "info": result.info, **(identity or {})},
        )
        if result.std_hu is not None:
            layers["std"] = self.viewer.add_image(
                shaped(result.std_hu),
                name=result_name(label, details, "std"),
                colormap="magma",
                contrast_limits=UNCERTAINTY_WINDOW.limits,
                **placement.kwargs(),
                visible=False,
                metadata={"units": "HU", "method": f"{request.method} std", **(identity or {})},
            )
        if result.abs_difference_hu is not None:
            layers["difference"] = self.viewer.add_image(
                shaped(result.abs_difference_hu),
                name=result_name(label, details, "|difference|"),
                colormap="inferno",
                contrast_limits=DIFFERENCE_WINDOW.limits,
                **placement.kwargs(),
                visible=False,
            )
        if isinstance(source, SourceSlices):
            origin = SinogramOrigin(result.measurement, placement, source.first_index, result.hu.shape[1:])
            sinogram_placement = (
                {}
                if squeeze
                else {"scale": (placement.scale[0], 1.0, 1.0), "translate": (placement.translate[0], 0.0, 0.0)}
            )
            layers["sinogram"] = self.viewer.add_image(
                shaped(result.sinogram),
                name=result_name("sinogram", details[:2]),
                colormap="gray",
                **sinogram_placement,
                visible=False,
                metadata={
                    SINOGRAM_ORIGIN_KEY: origin,
                    **result.measurement.metadata(),
                    "units": "post-log line integral",
                },
            )
        self.last_layers = layers
        self.viewer.layers.selection.active = layers["image"]
        if result.metrics:
            self.scores.value = f"{result.metrics['psnr']:.2f} dB / {result.metrics['ssim']:.3f}"
        self.status.value = f"{label} done in {result.seconds:.1f} s"

    def _on_error(self, error: Exception) -> None:
        self._finish()
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers.remove(PREVIEW_LAYER)
        self.status.value = f"failed: {error}"

    def _finish(self) -> None:
        """The run is over (result, error, cancel): forget the worker, drop the preview, re-enable Run.

        Connected to the worker's ``finished`` too, which Qt delivers after every queued update, so
        a preview that arrives late is removed as well.
        """
        self.worker = None
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers.remove(PREVIEW_LAYER)
        self.run_button.enabled = True
        self.cancel_button.enabled = False
