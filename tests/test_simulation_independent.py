"""Simulation without the inverse crime: the fine forward model against the matched projector,
determinism, metadata, the sinogram file and the command line, and reconstruction from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resample_med.geometry import FanBeamGeometry, ParallelBeamGeometry
from resample_med.operators import make_projector
from resample_med.operators.fine_model import fine_geometry, fine_line_integrals, upsample_image
from resample_med.pipeline import (
    AcquisitionConfig,
    load_measurements,
    reconstruct_slices,
    save_measurements,
    simulate_measurements,
)
from resample_med.units import hu_to_mu

SIZE = 48
SPACING = 1.5


def smooth_phantom(n: int = 2, size: int = SIZE) -> np.ndarray:
    """(n, size, size) HU: a soft-edged water ellipse with a bone blob, inside the reconstruction circle."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / (size - 1) * 2 - 1
    out = []
    for k in range(n):
        body = 1 / (1 + np.exp(((xx / 0.7) ** 2 + (yy / 0.55) ** 2 - 1) * 12))
        bone = np.exp(-((xx - 0.2 + 0.1 * k) ** 2 + (yy + 0.1) ** 2) / 0.02)
        out.append(-1000 + 1040 * body + 900 * bone)
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("kind", ["parallel", "fan"])
def test_independent_agrees_with_matched_to_discretisation_error(kind: str) -> None:
    hu = smooth_phantom()
    matched = simulate_measurements(hu, SPACING, AcquisitionConfig(geometry=kind, n_views=12, photons=None))
    independent = simulate_measurements(
        hu, SPACING, AcquisitionConfig(geometry=kind, n_views=12, photons=None, simulation="independent")
    )
    a, b = matched.sinogram.double(), independent.sinogram.double()
    relative = float((b - a).norm() / a.norm())
    assert 1e-5 < relative < 1e-2  # small (same object, same scanner) but not zero (another model)
    assert independent.projector.geometry == matched.projector.geometry  # reconstructed on the same grid
    assert independent.sinogram.shape == matched.sinogram.shape
    assert independent.acquisition.simulation == "independent"
    assert torch.equal(independent.reference_hu, matched.reference_hu)


@pytest.mark.parametrize(
    "geometry",
    [
        ParallelBeamGeometry.sparse_view(7, image_size=24, pixel_spacing_mm=1.3),
        FanBeamGeometry.sparse_view(7, image_size=24, pixel_spacing_mm=1.3),
    ],
)
def test_fine_model_without_refinement_is_the_matched_projector(geometry) -> None:
    """upsample = 1, one sub-ray per bin: the same rays on the same grid, so the same numbers;
    this pins the fine model's geometry conventions to the projector's."""
    mu = torch.as_tensor(hu_to_mu(smooth_phantom(1, 24)))
    fine = fine_line_integrals(mu, geometry, upsample=1, detector_subsamples=1)
    assert torch.allclose(fine, make_projector(geometry).forward(mu), rtol=1e-5, atol=1e-6)


def test_fine_geometry_keeps_the_scanner() -> None:
    coarse = FanBeamGeometry.sparse_view(5, image_size=16, pixel_spacing_mm=2.0)
    fine = fine_geometry(coarse, 2, 3)
    assert fine.fov_mm == pytest.approx(coarse.fov_mm) and fine.angles == coarse.angles
    assert fine.source_to_isocenter_mm == coarse.source_to_isocenter_mm
    sub = np.asarray(fine.detector_positions_mm()).reshape(coarse.det_count, 3)
    assert np.allclose(sub.mean(axis=1), coarse.detector_positions_mm())  # sub-bins centred on their bin
    with pytest.raises(ValueError, match="independent simulation: upsample and detector_subsamples must be >= 1"):
        fine_geometry(coarse, 0, 1)


def test_upsampling_tiles_the_coarse_pixels() -> None:
    image = torch.as_tensor(smooth_phantom(1, 32))
    fine = upsample_image(image, 2)
    assert fine.shape == (1, 64, 64)
    pooled = torch.nn.functional.avg_pool2d(fine[:, None], 2)[:, 0]  # 2x2 means back on the coarse grid
    assert float((pooled - image).abs().mean()) < 0.02 * float(image.abs().mean())


def test_bin_integration_averages_intensities_not_line_integrals() -> None:
    """Each bin records -log(mean_k e^{-p_k}) of its sub-rays on the fine grid: at a sharp step
    across the detector that lies below the mean of the p_k (Jensen), elsewhere it equals it."""
    geometry = ParallelBeamGeometry.sparse_view(3, image_size=8, pixel_spacing_mm=1.0)
    mu = torch.zeros(1, 8, 8)
    mu[:, :, 4:] = 1.0  # the 0-degree view's rays run along columns, across this step
    p = fine_line_integrals(mu, geometry, upsample=2, detector_subsamples=2)
    fine = fine_geometry(geometry, 2, 2)
    sub = make_projector(fine).forward(upsample_image(mu, 2).clamp_min(0.0)).double()
    sub = sub.reshape(1, geometry.n_views, geometry.det_count, 2)
    assert torch.allclose(p.double(), -torch.log(torch.exp(-sub).mean(dim=-1)), atol=1e-5)
    assert float((sub.mean(dim=-1) - p.double()).max()) > 0.1  # the edge-gradient effect is there


def test_independent_simulation_is_deterministic_from_the_seed() -> None:
    acquisition = AcquisitionConfig(n_views=10, simulation="independent")
    run = lambda seed: (
        simulate_measurements(
            smooth_phantom(1), SPACING, acquisition, generator=torch.Generator().manual_seed(seed)
        ).sinogram
    )
    assert torch.equal(run(4), run(4))
    assert not torch.equal(run(4), run(5))


def test_simulation_mode_survives_the_sinogram_file(tmp_path) -> None:
    acquisition = AcquisitionConfig(geometry="fan", n_views=8, simulation="independent")
    measured = simulate_measurements(
        smooth_phantom(1), SPACING, acquisition, generator=torch.Generator().manual_seed(0)
    )
    loaded = load_measurements(save_measurements(tmp_path / "sino.npz", measured))
    assert loaded.acquisition == acquisition
    with pytest.raises(ValueError, match="simulation"):
        AcquisitionConfig(simulation="exact")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["cgls", "tv"])
def test_reconstruction_from_independent_data_works(method: str) -> None:
    hu = smooth_phantom()
    scores = {}
    for simulation in ("matched", "independent"):
        acquisition = AcquisitionConfig(n_views=24, photons=1e5, simulation=simulation)
        measured = simulate_measurements(hu, SPACING, acquisition, generator=torch.Generator().manual_seed(0))
        result = reconstruct_slices(measured, method)
        scores[simulation] = np.mean([row["psnr"] for row in result.per_slice])
    assert scores["independent"] > 25.0
    assert abs(scores["independent"] - scores["matched"]) < 2.0


def test_cli_simulate_independent(tmp_path) -> None:
    from resample_med.cli import main

    volume = tmp_path / "ct.nii.gz"
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.GetImageFromArray(smooth_phantom(2, 40).astype(np.int16))
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(volume))
    out = tmp_path / "sino.npz"
    assert main(["simulate", str(volume), str(out), "--size", "32", "--views", "8", "--simulation", "independent"]) == 0
    assert load_measurements(out).acquisition.simulation == "independent"
