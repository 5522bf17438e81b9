"""The engine: acquisition configs, simulation, linearisation, batched slices, volumes, resume, sinogram files."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from resample_med.io import CTVolume
from resample_med.models import create_bundle
from resample_med.pipeline import (
    ACQUISITION_PRESETS,
    AcquisitionConfig,
    CheckpointMismatchError,
    SinogramFileError,
    SliceCheckpoint,
    linearise,
    load_measurements,
    reconstruct_slices,
    reconstruct_volume,
    save_measurements,
    select_slices,
    simulate_measurements,
)
from resample_med.pipeline import slices as slices_module
from resample_med.pipeline.seeding import derived_seed, make_generator
from resample_med.sampling import PRESETS
from resample_med.units import hu_to_model

SIZE = 32
"""Grid side of the tiny test model."""


def phantom(n: int = 3, size: int = SIZE) -> np.ndarray:
    """(n, size, size) HU: air, a water square, a bone insert moving with the slice index."""
    hu = np.full((n, size, size), -1000.0, dtype=np.float32)
    q = size // 4
    hu[:, q : 3 * q, q : 3 * q] = 40.0
    for k in range(n):
        hu[k, q + 2 + k : q + 6 + k, size // 2 : size // 2 + 4] = 900.0
    return hu


def phantom_volume(n: int = 5) -> CTVolume:
    """A CTVolume of :func:`phantom` with a non-trivial origin and spacing."""
    return CTVolume(
        hu=phantom(n),
        spacing_mm=(2.5, 1.25, 1.25),
        origin_mm=np.array([-20.0, -30.0, 100.0]),
        direction=np.eye(3),
        source={"format": "test"},
    )


SHORT_RESAMPLE = dataclasses.replace(
    PRESETS["fast"], num_steps=3, final_max_iter=2, latent=dataclasses.replace(PRESETS["fast"].latent, max_iter=2)
)
"""ReSample cut to a few network calls: the tests check plumbing, not image quality."""


@pytest.fixture(scope="module")
def tiny_prior():
    """An untrained tiny bundle (32x32 images): enough to exercise the diffusion methods' plumbing."""
    return create_bundle("tiny", seed=0)


def test_acquisition_config_validates_and_round_trips():
    for preset in ACQUISITION_PRESETS.values():
        assert AcquisitionConfig.from_dict(json.loads(json.dumps(preset.to_dict()))) == preset
    with pytest.raises(ValueError, match="geometry"):
        AcquisitionConfig(geometry="cone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="arc_deg"):
        AcquisitionConfig(geometry="parallel", arc_deg=270.0)
    with pytest.raises(ValueError, match="unknown acquisition"):
        AcquisitionConfig.from_dict({"n_views": 10, "dose": 3})


@pytest.mark.parametrize("kind", ["parallel", "fan", "fan-clinical"])
def test_geometry_kinds_give_requested_views(kind):
    geometry = AcquisitionConfig(geometry=kind, n_views=12).make_geometry(SIZE, 1.5)
    assert geometry.n_views == 12 and geometry.image_size == SIZE


def test_linearisation_is_exact_for_noiseless_data():
    hu = phantom()
    measurements = simulate_measurements(hu, 1.5, AcquisitionConfig(n_views=16, photons=None))
    problem = linearise(measurements)
    x = torch.as_tensor(hu_to_model(hu))[:, None]
    residual = (problem.operator.forward(x) - problem.y).norm() / problem.y.norm()
    assert residual < 1e-5
    # A_lin's adjoint is exact: <A x, y> = <x, A^T y>
    gen = torch.Generator().manual_seed(1)
    xr, yr = torch.randn(x.shape, generator=gen), torch.randn(problem.y.shape, generator=gen)
    lhs = (problem.operator.forward(xr) * yr).sum()
    rhs = (xr * problem.operator.adjoint(yr)).sum()
    assert torch.isclose(lhs, rhs, rtol=1e-4)


def test_noise_level_matches_its_variance_estimate():
    hu = phantom()
    acquisition = AcquisitionConfig(n_views=16, photons=1e4)
    measurements = simulate_measurements(hu, 1.5, acquisition, generator=torch.Generator().manual_seed(0))
    problem = linearise(measurements)
    x = torch.as_tensor(hu_to_model(hu))[:, None]
    ratio = (problem.operator.forward(x) - problem.y).pow(2).sum() / problem.noise_std.pow(2).sum()
    assert 0.8 < float(ratio) < 1.2


def test_noisy_simulation_needs_a_generator_and_is_reproducible():
    acquisition = AcquisitionConfig(n_views=8, photons=1e4)
    with pytest.raises(ValueError, match="Generator"):
        simulate_measurements(phantom(1), 1.0, acquisition)
    a = simulate_measurements(phantom(1), 1.0, acquisition, generator=torch.Generator().manual_seed(3))
    b = simulate_measurements(phantom(1), 1.0, acquisition, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.sinogram, b.sinogram)


def test_derived_seeds_differ_by_purpose_and_index():
    seeds = {derived_seed(0, p, i) for p in ("noise", "sampler") for i in range(4)}
    assert len(seeds) == 8
    assert derived_seed(5, "noise", 2) == derived_seed(5, "noise", 2)
    g1, g2 = make_generator(0, "noise", 1), make_generator(0, "noise", 1)
    assert torch.equal(torch.randn(3, generator=g1), torch.randn(3, generator=g2))


def test_fbp_slices_report_metrics_and_residuals():
    hu = phantom()
    measurements = simulate_measurements(hu, 1.5, AcquisitionConfig(n_views=64, photons=None))
    rec = reconstruct_slices(measurements, "fbp", batch_size=2)
    assert rec.hu.shape == hu.shape and rec.std_hu is None
    assert [row["index"] for row in rec.per_slice] == [0, 1, 2]
    for row in rec.per_slice:
        assert row["psnr"] > 20 and 0 < row["ssim"] <= 1 and row["residual"] < 0.2
    # fewer views -> worse FBP
    sparse = reconstruct_slices(simulate_measurements(hu, 1.5, AcquisitionConfig(n_views=6, photons=None)), "fbp")
    assert np.mean([r["psnr"] for r in sparse.per_slice]) < np.mean([r["psnr"] for r in rec.per_slice])


def test_resample_with_tiny_prior_gives_std_over_samples(tiny_prior):
    measurements = simulate_measurements(
        phantom(2), 1.5, AcquisitionConfig(n_views=12), generator=torch.Generator().manual_seed(0)
    )
    events = []
    rec = reconstruct_slices(
        measurements,
        "resample",
        prior=tiny_prior,
        config=SHORT_RESAMPLE,
        batch_size=2,
        n_samples=2,
        callback=events.append,
    )
    assert rec.hu.shape == (2, SIZE, SIZE) and rec.std_hu is not None and rec.std_hu.shape == (2, SIZE, SIZE)
    assert np.isfinite(rec.hu).all() and (rec.std_hu >= 0).all()
    assert events and events[-1].stage == "final_consistency"
    again = reconstruct_slices(
        measurements, "resample", prior=tiny_prior, config=SHORT_RESAMPLE, batch_size=2, n_samples=2
    )
    np.testing.assert_array_equal(rec.hu, again.hu)


def test_volume_reconstruction_does_not_depend_on_batch_size():
    volume = phantom_volume(5)
    acquisition = AcquisitionConfig(n_views=16, photons=1e5)
    one = reconstruct_volume(volume, acquisition, "fbp", batch_size=1)
    three = reconstruct_volume(volume, acquisition, "fbp", batch_size=3)
    np.testing.assert_allclose(one.volume.hu, three.volume.hu, atol=1e-3)
    assert one.volume.hu.shape == volume.hu.shape
    np.testing.assert_array_equal(one.volume.origin_mm, volume.origin_mm)
    assert one.volume.spacing_mm == volume.spacing_mm
    assert [r["index"] for r in one.per_slice] == list(range(5))
    assert one.info["mean"]["psnr"] > 15


def test_interrupted_volume_resumes_only_the_remaining_slices(tmp_path, monkeypatch):
    volume = phantom_volume(5)
    acquisition = AcquisitionConfig(n_views=16, photons=1e5)
    calls: list[int] = []
    real = slices_module.reconstruct

    def counting(method, y, *args, **kwargs):
        calls.append(int(y.shape[0]))
        if len(calls) == 2 and fail_second:
            raise KeyboardInterrupt
        return real(method, y, *args, **kwargs)

    monkeypatch.setattr(slices_module, "reconstruct", counting)
    fingerprint = {"test": 1}
    fail_second = True
    with pytest.raises(KeyboardInterrupt):
        reconstruct_volume(
            volume, acquisition, "fbp", batch_size=2, checkpoint=SliceCheckpoint.open(tmp_path / "partial", fingerprint)
        )
    assert SliceCheckpoint.open(tmp_path / "partial", fingerprint).done() == {0, 1}
    fail_second = False
    calls.clear()
    resumed = reconstruct_volume(
        volume, acquisition, "fbp", batch_size=2, checkpoint=SliceCheckpoint.open(tmp_path / "partial", fingerprint)
    )
    assert sum(calls) == 3
    assert [r["resumed"] for r in resumed.per_slice] == [True, True, False, False, False]
    fresh = reconstruct_volume(volume, acquisition, "fbp", batch_size=2)
    np.testing.assert_allclose(resumed.volume.hu, fresh.volume.hu, atol=1e-3)
    with pytest.raises(CheckpointMismatchError, match="changed: test"):
        SliceCheckpoint.open(tmp_path / "partial", {"test": 2})


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_sinogram_file_round_trip(tmp_path, suffix):
    acquisition = AcquisitionConfig(geometry="fan", n_views=10, photons=1e5)
    measurements = simulate_measurements(phantom(2), 1.25, acquisition, generator=torch.Generator().manual_seed(0))
    path = save_measurements(tmp_path / f"sino{suffix}", measurements)
    loaded = load_measurements(path)
    assert torch.equal(loaded.sinogram, measurements.sinogram)
    assert loaded.projector.geometry == measurements.projector.geometry
    assert loaded.acquisition == acquisition and loaded.pixel_spacing_mm == 1.25
    assert (loaded.reference_hu is not None) == (suffix == ".npz")


def test_bad_sinogram_files_name_the_file(tmp_path):
    with pytest.raises(SinogramFileError, match="no such"):
        load_measurements(tmp_path / "missing.npz")
    np.save(tmp_path / "lonely.npy", np.zeros((1, 4, 4), np.float32))
    with pytest.raises(SinogramFileError, match="lonely.json"):
        load_measurements(tmp_path / "lonely.npy")
    measurements = simulate_measurements(phantom(1), 1.0, AcquisitionConfig(n_views=8, photons=None))
    save_measurements(tmp_path / "ok.npy", measurements)
    np.save(tmp_path / "ok.npy", np.zeros((1, 7, 5), np.float32))
    with pytest.raises(SinogramFileError, match="does not match"):
        load_measurements(tmp_path / "ok.npy")


def test_select_slices_keeps_geometry_of_the_kept_slices():
    volume = phantom_volume(5)
    volume = volume.with_hu(
        volume.hu, ImagePositionPatient=volume.slice_positions().tolist(), files=[f"f{k}" for k in range(5)]
    )
    part = select_slices(volume, slice(1, 4))
    assert part.n_slices == 3 and part.source["files"] == ["f1", "f2", "f3"]
    np.testing.assert_allclose(part.slice_positions(), volume.slice_positions()[1:4])
    np.testing.assert_array_equal(part.hu, volume.hu[1:4])
    with pytest.raises(ValueError, match="no contiguous"):
        select_slices(volume, slice(4, 2))


def test_volume_reconstruction_returns_the_measurements_it_simulated():
    from resample_med.io import iter_model_slices
    from resample_med.pipeline.volume import simulate_model_slices

    volume = phantom_volume(3)
    acquisition = AcquisitionConfig(n_views=16, photons=1e5)
    result = reconstruct_volume(volume, acquisition, "fbp", seed=5, first_index=10)
    again = simulate_model_slices(list(iter_model_slices(volume, size=256)), acquisition, 5, first_index=10)
    assert result.measurements is not None and result.measurements.acquisition == acquisition
    np.testing.assert_array_equal(result.measurements.sinogram.numpy(), again.sinogram.numpy())


def test_one_dispatch_reconstructs_volumes_and_measurements_alike():
    from resample_med.pipeline import reconstruct_input

    volume = phantom_volume(2)
    acquisition = AcquisitionConfig(n_views=16, photons=1e5)
    from_volume = reconstruct_input(volume, acquisition, "fbp", seed=3)
    direct = reconstruct_volume(volume, acquisition, "fbp", seed=3)
    np.testing.assert_array_equal(from_volume.volume.hu, direct.volume.hu)
    from_data = reconstruct_input(direct.measurements, None, "fbp", seed=3)
    sliced = reconstruct_slices(direct.measurements, "fbp", seed=3)
    np.testing.assert_array_equal(from_data.volume.hu, sliced.hu)
    assert from_data.volume.source["format"] == "sinogram" and from_data.measurements is direct.measurements
    assert [r["index"] for r in from_data.per_slice] == [0, 1] and from_data.info["n_resumed"] == 0
