"""napari plugin: manifest, discovery, dock widget runs (FBP, tiny ReSample), cancel, responsiveness,
reader and sample data. Headless under Xvfb (pytest-xvfb); napari's ``make_napari_viewer`` fixture."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

pytestmark = pytest.mark.gui

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "resample-med"
WIDGET = "Sparse-view CT reconstruction"
RUN_TIMEOUT_MS = 120_000

VOXEL_SPACING = (2.5, 0.9, 0.9)
ORIGIN_ZYX = (-40.0, 12.0, -30.0)


def phantom_volume(n_slices: int = 2, size: int = 128) -> np.ndarray:
    """``(n_slices, size, size)`` HU: air around a water ellipse with a bone ring and lung holes."""
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    body = (xx / 0.8) ** 2 + (yy / 0.6) ** 2 <= 1
    slice_hu = np.where(body, 40.0, -1000.0)
    slice_hu[((xx + 0.35) ** 2 + yy**2) <= 0.04] = -800.0
    slice_hu[((xx - 0.35) ** 2 + yy**2) <= 0.04] = -800.0
    ring = np.abs(np.hypot(xx, yy + 0.3) - 0.15) <= 0.03
    slice_hu[ring] = 1200.0
    return np.stack([slice_hu + 10.0 * k for k in range(n_slices)]).astype(np.float32)


@pytest.fixture
def tiny_prior():
    """A tiny untrained latent diffusion bundle (fast; its images are not CT-like)."""
    from resample_med.models import create_bundle

    return create_bundle("tiny", seed=0)


@pytest.fixture
def docked(make_napari_viewer):
    """A viewer with a phantom volume layer and the widget docked through the plugin manager."""
    viewer = make_napari_viewer()
    layer = viewer.add_image(phantom_volume(), name="phantom", scale=VOXEL_SPACING, translate=ORIGIN_ZYX)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.image.value = layer
    return viewer, widget, layer


def run_and_wait(qtbot, widget):
    """Click Run, wait until the worker has finished and check napari's progress bar reached the
    end; returns the worker's yielded updates and the times they arrived in the GUI thread."""
    from napari_plugin._job import PROGRESS_UNITS

    updates, arrivals = [], []
    widget.run_button.clicked.emit()
    worker = widget.worker
    assert worker is not None, widget.status.value
    worker.yielded.connect(updates.append)
    worker.yielded.connect(lambda _update: arrivals.append(time.perf_counter()))
    with qtbot.waitSignal(worker.finished, timeout=RUN_TIMEOUT_MS):
        pass
    if widget.last_result is not None and not widget.status.value.startswith(("failed", "cancelled")):
        assert (worker.pbar.n, worker.pbar.total) == (PROGRESS_UNITS, PROGRESS_UNITS)
    return updates, arrivals


SLOW_NETWORK_SECONDS = 0.15
"""Stand-in cost of one UNet evaluation in the responsiveness test (8 steps: over 1 s)."""


def set_tiny_resample(widget, prior, steps: int) -> None:
    widget.prior_loader = lambda device: prior
    widget.method.value = "resample"
    widget.steps.value = steps
    widget.noise.value = False


def test_manifest_validates_and_ships_with_the_package():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", PLUGIN], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    packaged = files("napari_plugin") / "napari.yaml"
    assert packaged.is_file()
    assert (REPO_ROOT / "napari.yaml").read_text() == packaged.read_text()


def test_plugin_is_discovered_with_widget_reader_and_sample_data():
    from npe2 import PluginManager

    manager = PluginManager()
    manager.discover(include_npe1=False)
    manifest = manager.get_manifest(PLUGIN)
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == [WIDGET]
    assert contributions.readers[0].accepts_directories
    assert [s.key for s in contributions.sample_data] == ["sample_ct", "sample_ct_head"]
    names = [s.display_name for s in contributions.sample_data]
    assert "in distribution" in names[0] and "Chest" in names[0]
    assert "out of distribution" in names[1] and "Head" in names[1]
    assert [w.filename_extensions for w in contributions.writers] == [[".dcm"]]


def test_fbp_run_adds_overlaying_layers_and_metrics(docked, qtbot):
    from napari_plugin._widget import SCOPE_VOLUME

    viewer, widget, layer = docked
    widget.reference.value = layer
    widget.method.value = "fbp"
    widget.geometry.value = "parallel"
    widget.n_views.value = 90
    widget.noise.value = False
    widget.scope.value = SCOPE_VOLUME
    run_and_wait(qtbot, widget)

    result = widget.last_layers["image"]
    assert result.name.startswith("FBP | parallel 90 views | noiseless")
    assert result.data.shape == layer.data.shape
    np.testing.assert_allclose(result.scale, layer.scale)
    np.testing.assert_allclose(result.translate, layer.translate)
    assert widget.last_layers["difference"].data.shape == layer.data.shape
    assert widget.last_layers["sinogram"].data.shape[:2] == (2, 90)
    psnr = widget.last_result.metrics["psnr"]
    assert psnr > 20.0, widget.last_result.metrics
    assert f"{psnr:.2f} dB" in widget.scores.value
    assert widget.worker is None and widget.run_button.enabled

    # The sinogram layer remembers its geometry (not the widget's views): reconstruct it again.
    widget.sinogram.value = widget.last_layers["sinogram"]
    widget.n_views.value = 30
    n_layers = len(viewer.layers)
    run_and_wait(qtbot, widget)
    again = widget.last_layers["image"]
    assert again.name.startswith("FBP | parallel 90 views")
    assert again.data.shape == layer.data.shape
    np.testing.assert_allclose(again.translate, layer.translate)
    assert "sinogram" not in widget.last_layers
    assert len(viewer.layers) == n_layers + 2  # image and |difference|
    assert widget.last_result.metrics["psnr"] > 20.0, widget.last_result.metrics


def test_current_slice_result_sits_on_that_slice(docked, qtbot):
    viewer, widget, layer = docked
    widget.method.value = "fbp"
    viewer.dims.set_current_step(0, 1)
    run_and_wait(qtbot, widget)
    result = widget.last_layers["image"]
    assert result.data.shape == (1, *layer.data.shape[1:])
    np.testing.assert_allclose(result.translate[0], ORIGIN_ZYX[0] + VOXEL_SPACING[0])
    np.testing.assert_allclose(result.scale, layer.scale)

    # A sinogram from elsewhere (no metadata): the widget's geometry kind, 256^2 grid of 1 mm.
    measured = viewer.add_image(np.array(widget.last_layers["sinogram"].data[0]), name="measured")
    widget.sinogram.value = measured
    run_and_wait(qtbot, widget)
    from_outside = widget.last_layers["image"]
    assert from_outside.data.shape == (256, 256)
    np.testing.assert_allclose(from_outside.scale, (1.0, 1.0))


def test_resample_tiny_shows_previews_and_uncertainty(docked, qtbot, tiny_prior):
    viewer, widget, layer = docked
    set_tiny_resample(widget, tiny_prior, steps=2)
    widget.n_samples.value = 2
    updates, _ = run_and_wait(qtbot, widget)
    assert any(u.preview_hu is not None for u in updates)
    assert all(u.preview_hu.shape == layer.data.shape[1:] for u in updates if u.preview_hu is not None)
    assert "std" in widget.last_layers
    assert widget.last_layers["std"].data.shape == (1, *layer.data.shape[1:])
    assert "reconstruction preview" not in viewer.layers
    assert widget.last_layers["image"].name.startswith("ReSample | parallel")


def test_cancel_stops_within_a_step(docked, qtbot, tiny_prior):
    viewer, widget, _layer = docked
    set_tiny_resample(widget, tiny_prior, steps=500)
    n_layers = len(viewer.layers)
    widget.run_button.clicked.emit()
    worker = widget.worker
    seen = []
    worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: any("sampling" in u.message for u in seen), timeout=RUN_TIMEOUT_MS)
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        widget.cancel_button.clicked.emit()
    assert widget.status.value == "cancelled"
    assert widget.last_result is None
    assert len(viewer.layers) == n_layers
    steps_seen = [int(u.message.split()[1].split("/")[0]) for u in seen if u.message.startswith("sampling")]
    assert max(steps_seen) < 500


def test_gui_keeps_responding_while_reconstructing(docked, qtbot, tiny_prior, monkeypatch):
    from qtpy.QtCore import QTimer

    _viewer, widget, _layer = docked
    # The tiny model is too fast on a quick machine to show anything: give every network
    # evaluation the cost of a real one, so the run lasts over a second on any machine.
    predict_noise = tiny_prior.predict_noise

    def slow_predict_noise(*args, **kwargs):
        time.sleep(SLOW_NETWORK_SECONDS)
        return predict_noise(*args, **kwargs)

    monkeypatch.setattr(tiny_prior, "predict_noise", slow_predict_noise)
    # at least 8 network evaluations: a warm-started preset runs only the steps it does not skip
    from resample_med.sampling import PRESETS

    preset = PRESETS[widget.preset.value]
    steps = next(n for n in range(8, 100) if n - dataclasses.replace(preset, num_steps=n).warm_start_step >= 8)
    set_tiny_resample(widget, tiny_prior, steps=steps)
    interval_ms = 20
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(interval_ms)
    started = time.perf_counter()
    _, arrivals = run_and_wait(qtbot, widget)
    timer.stop()
    assert widget.last_result is not None, widget.status.value
    # The reconstruction itself, up to its last progress update (adding result layers after it is
    # ordinary GUI work on the main thread).
    reconstructing = [t for t in ticks if t <= arrivals[-1]]
    elapsed = arrivals[-1] - started
    assert elapsed >= 1.0, f"run too short ({elapsed:.2f} s) to show responsiveness"
    expected = elapsed * 1000 / interval_ms
    gaps = np.diff([started, *reconstructing, started + elapsed])
    assert len(reconstructing) >= 0.3 * expected, (len(reconstructing), expected)
    assert gaps.max() < 1.0, f"GUI froze for {gaps.max():.2f} s"


def write_dicom_series(folder: Path, hu: np.ndarray, spacing_zyx, origin_xyz) -> None:
    """A CT series, one file per slice, InstanceNumbers scrambled, stored with intercept -1024."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    order = [2, 0, 3, 1][: len(hu)]
    for k, slice_hu in enumerate(hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{order[k]}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientID = "PHANTOM"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.InstanceNumber = order[k] + 1
        ds.ImagePositionPatient = [origin_xyz[0], origin_xyz[1], origin_xyz[2] + k * spacing_zyx[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing_zyx[1], spacing_zyx[2]]
        ds.SliceThickness = spacing_zyx[0]
        ds.Rows, ds.Columns = slice_hu.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (slice_hu + 1024).astype(np.uint16).tobytes()
        ds.save_as(ds.filename, enforce_file_format=True)


def test_reader_opens_a_dicom_folder_with_hu_and_spacing(make_napari_viewer, tmp_path):
    from napari_plugin._reader import get_reader

    hu = phantom_volume(n_slices=4, size=48)
    spacing, origin_xyz = (2.0, 0.7, 0.8), (-20.0, 15.0, 100.0)
    folder = tmp_path / "series"
    write_dicom_series(folder, hu, spacing, origin_xyz)
    not_dicom = tmp_path / "notes"
    not_dicom.mkdir()
    (not_dicom / "readme.txt").write_text("no images here")
    assert get_reader(str(not_dicom)) is None

    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(folder), plugin=PLUGIN)
    np.testing.assert_allclose(layer.data, hu, atol=0.5)
    np.testing.assert_allclose(layer.scale, spacing, rtol=1e-4)
    np.testing.assert_allclose(layer.translate, origin_xyz[::-1], atol=1e-4)


def test_reader_opens_nifti(tmp_path):
    import nibabel

    from napari_plugin._reader import get_reader

    hu = phantom_volume(n_slices=3, size=32)
    path = tmp_path / "ct.nii.gz"
    affine = np.diag([-0.6, -0.7, 3.0, 1.0])  # RAS; voxel axes (x, y, z)
    nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(hu.transpose(2, 1, 0)), affine), str(path))
    reader = get_reader(str(path))
    assert reader is not None
    ((data, kwargs, kind),) = reader(str(path))
    assert kind == "image" and data.shape == hu.shape
    np.testing.assert_allclose(kwargs["scale"], (3.0, 0.7, 0.6), rtol=1e-5)
    np.testing.assert_allclose(np.sort(data.ravel()), np.sort(hu.ravel()), atol=0.5)


def test_sample_data_loads_in_hu(make_napari_viewer):
    viewer = make_napari_viewer()
    (layer,) = viewer.open_sample(PLUGIN, "sample_ct")
    assert layer.data.ndim == 3
    assert all(s > 0 for s in layer.scale)
    assert layer.data.min() < -900 and layer.data.max() > 200  # air and bone in HU


def test_head_sample_is_named_out_of_distribution(make_napari_viewer):
    viewer = make_napari_viewer()
    (layer,) = viewer.open_sample(PLUGIN, "sample_ct_head")
    assert "out of distribution" in layer.name
    (chest,) = viewer.open_sample(PLUGIN, "sample_ct")
    assert "in distribution" in chest.name


def test_writer_saves_a_layer_as_a_derived_series_in_the_source_study(tmp_path):
    import pydicom

    from napari_plugin._reader import volume_layer_data
    from napari_plugin._writer import write_dicom_series
    from resample_med.io import load_sample_ct, load_volume

    source = load_sample_ct("small")
    data, kwargs, _kind = volume_layer_data(source, name="small")
    (folder,) = write_dicom_series(str(tmp_path / "saved.dcm"), data + 5.0, kwargs)
    assert Path(folder) == tmp_path / "saved"
    saved = load_volume(folder)
    np.testing.assert_allclose(saved.hu, source.hu + 5.0, atol=0.5)
    np.testing.assert_allclose(saved.spacing_mm[1:], source.spacing_mm[1:], rtol=1e-6)
    np.testing.assert_allclose(saved.origin_mm, source.origin_mm, atol=1e-4)
    ds = pydicom.dcmread(next(Path(folder).glob("*.dcm")))
    assert ds.StudyInstanceUID == source.source["StudyInstanceUID"]
    assert ds.SeriesInstanceUID != source.source["SeriesInstanceUID"]
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source.source["SeriesInstanceUID"]
    assert str(ds.PatientName) == str(source.source["header"]["PatientName"])
    assert "napari layer 'small'" in ds.ImageComments
    with pytest.raises(ValueError, match="2D or 3D image layer"):
        write_dicom_series(str(tmp_path / "bad.dcm"), np.zeros((2, 2, 4, 4)), {})


def test_save_layer_through_napari_picks_the_dicom_writer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_image(
        phantom_volume(n_slices=2, size=32), name="recon", scale=VOXEL_SPACING, translate=ORIGIN_ZYX
    )
    written = layer.save(str(tmp_path / "recon.dcm"), plugin=PLUGIN)
    assert written == [str(tmp_path / "recon")]
    assert len(list((tmp_path / "recon").glob("*.dcm"))) == 2


def test_saved_reconstruction_stays_in_the_source_study(make_napari_viewer, qtbot, tmp_path):
    import pydicom

    from napari_plugin._reader import volume_layer_data
    from resample_med.io import load_sample_ct

    source = load_sample_ct("small")
    viewer = make_napari_viewer()
    data, kwargs, _kind = volume_layer_data(source, name="small")
    layer = viewer.add_image(data, **kwargs)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.image.value = layer
    widget.method.value = "fbp"
    widget.noise.value = False
    run_and_wait(qtbot, widget)
    (folder,) = widget.last_layers["image"].save(str(tmp_path / "fbp.dcm"), plugin=PLUGIN)
    ds = pydicom.dcmread(next(Path(folder).glob("*.dcm")))
    assert ds.StudyInstanceUID == source.source["StudyInstanceUID"]
    assert ds.FrameOfReferenceUID == source.source["FrameOfReferenceUID"]
    assert ds.SeriesDescription.startswith("fbp ")


def test_widget_run_simulates_each_measurement_once_and_shows_what_it_inverted(monkeypatch):
    import threading

    from napari_plugin._job import ReconstructionRequest, SourceSlices, run_reconstruction
    from resample_med.pipeline import AcquisitionConfig
    from resample_med.pipeline import volume as volume_module

    calls = []
    simulate = volume_module.simulate_measurements

    def counting(hu, *args, **kwargs):
        calls.append(hu.shape)
        return simulate(hu, *args, **kwargs)

    monkeypatch.setattr(volume_module, "simulate_measurements", counting)
    request = ReconstructionRequest(AcquisitionConfig(n_views=12, photons=1e5), "fbp", "fast", steps=2, gamma=40.0)
    source = SourceSlices(hu=phantom_volume(n_slices=2, size=48), spacing_mm=(2.0, 1.0, 1.0))
    runner = run_reconstruction(request, source, lambda device: None, threading.Event())
    while True:
        try:
            next(runner)
        except StopIteration as stop:
            result = stop.value
            break
    assert len(calls) == 2  # one simulation per slice, none repeated for the sinogram layer
    volume = volume_module.CTVolume(
        hu=source.hu, spacing_mm=source.spacing_mm, origin_mm=np.zeros(3), direction=np.eye(3)
    )
    expected = volume_module.reconstruct_volume(volume, request.acquisition, "fbp", config="fast")
    np.testing.assert_array_equal(result.sinogram, expected.measurements.sinogram.numpy())
    np.testing.assert_allclose(result.hu, expected.volume.hu, atol=1e-4)
