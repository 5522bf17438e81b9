"""torch-radon compatible classes: defaults, shapes, adjointness, reconstruction, clip_to_circle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resample_med.operators.torch_radon import Radon, RadonFanbeam

SIZE = 32


pytestmark = pytest.mark.usefixtures("single_torch_thread", "private_operator_cache")


def _disk(radius: float = 10.0) -> torch.Tensor:
    c = torch.arange(SIZE) - (SIZE - 1) / 2
    return ((c[:, None] ** 2 + c[None, :] ** 2) < radius**2).float()


def test_radon_defaults_shapes_and_pixel_units() -> None:
    angles = np.linspace(0, np.pi, 12, endpoint=False)
    radon = Radon(SIZE, angles)
    assert radon.det_count == SIZE and radon.det_spacing == 1.0
    assert radon.geometry.pixel_spacing_mm == 1.0
    sinogram = radon.forward(torch.ones(2, 3, SIZE, SIZE))
    assert sinogram.shape == (2, 3, 12, SIZE)
    assert sinogram[0, 0, 0, SIZE // 2].item() == pytest.approx(SIZE)  # a row of 32 unit pixels
    assert torch.equal(radon.backward(sinogram), radon.backprojection(sinogram))
    assert Radon(SIZE, torch.tensor(angles), det_count=50).forward(_disk()).shape == (12, 50)


def test_radon_backprojection_is_the_gradient_of_forward() -> None:
    radon = Radon(SIZE, np.linspace(0, np.pi, 7, endpoint=False), clip_to_circle=True)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(SIZE, SIZE, dtype=torch.float64, generator=generator, requires_grad=True)
    y = torch.rand(7, SIZE, dtype=torch.float64, generator=generator)
    (radon.forward(x) * y).sum().backward()
    torch.testing.assert_close(x.grad, radon.backprojection(y))
    assert radon.backprojection(y)[0, 0].item() == 0.0  # outside the circle


def test_filtered_backprojection_reconstructs() -> None:
    radon = Radon(SIZE, np.linspace(0, np.pi, 90, endpoint=False), det_count=48)
    disk = _disk()
    sinogram = radon.forward(disk)
    inner = _disk(radius=7.0).bool()  # away from the edge, where FBP rings
    for reconstruction in (radon.backprojection(radon.filter_sinogram(sinogram)), radon.fbp(sinogram)):
        assert (reconstruction - disk)[inner].abs().mean().item() < 0.03


def test_fanbeam_defaults_and_fbp() -> None:
    angles = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    fan = RadonFanbeam(SIZE, angles, source_distance=64.0)
    assert fan.det_distance == 64.0 and fan.det_spacing == 2.0 and fan.det_count == SIZE
    assert fan.geometry.source_to_detector_mm == 128.0
    other = RadonFanbeam(SIZE, angles, source_distance=64.0, det_distance=32.0, det_count=70)
    assert other.det_spacing == pytest.approx(1.5)
    disk = _disk()
    reconstruction = other.fbp(other.forward(disk[None]))[0]
    inner = _disk(radius=7.0).bool()  # away from the edge, where FBP rings
    assert (reconstruction - disk)[inner].abs().mean().item() < 0.03
    assert other.filter_sinogram(other.forward(disk)).shape == (120, 70)
