"""Projector core: exact adjointness, operator norm, autograd, batching, subsets, caching, devices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from resample_med.geometry import FanBeamGeometry, ParallelBeamGeometry
from resample_med.operators import Projector, cache, clear_memory_cache, make_projector
from resample_med.operators.fbp import angular_step
from resample_med.sampling.linalg import operator_norm

TINY = 12
"""Side of the images used by the exhaustive (dense / gradcheck) tests."""


def _geometries() -> dict[str, object]:
    parallel = ParallelBeamGeometry(TINY, 0.8, 19, 0.5, tuple(np.linspace(0, np.pi, 7, endpoint=False)))
    fan = FanBeamGeometry.sparse_view(9, image_size=TINY, pixel_spacing_mm=1.3)
    return {
        "parallel": parallel,
        "parallel-sparse-view": ParallelBeamGeometry.sparse_view(5, image_size=TINY),
        "parallel-limited-angle": ParallelBeamGeometry.limited_angle(6, arc_deg=100, image_size=TINY),
        "fan": fan,
        "fan-clinical": FanBeamGeometry.clinical(8, image_size=TINY, pixel_spacing_mm=2.0),
        "fan-subset": fan.subset([0, 3, 5, 8]),
    }


GEOMETRIES = _geometries()


pytestmark = pytest.mark.usefixtures("single_torch_thread", "private_operator_cache")


def _random_pair(projector: Projector, generator: torch.Generator, *lead: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(*lead, *projector.image_shape, generator=generator, dtype=projector.dtype)
    y = torch.rand(*lead, *projector.sinogram_shape, generator=generator, dtype=projector.dtype)
    return x, y


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_dot_product_adjointness(name: str) -> None:
    """<A x, y> == <x, A^T y> for random x, y (float64 accumulation)."""
    projector = make_projector(GEOMETRIES[name], dtype=torch.float64)
    x, y = _random_pair(projector, torch.Generator().manual_seed(0), 3)
    lhs = (projector.forward(x) * y).sum()
    rhs = (x * projector.adjoint(y)).sum()
    assert abs(lhs - rhs) / abs(lhs) < 1e-5
    assert projector.nnz > 0


@pytest.mark.parametrize("name", ["parallel", "fan"])
def test_dot_product_float32(name: str) -> None:
    projector = make_projector(GEOMETRIES[name])
    x, y = _random_pair(projector, torch.Generator().manual_seed(1), 2)
    lhs = (projector.forward(x).double() * y.double()).sum()
    rhs = (x.double() * projector.adjoint(y).double()).sum()
    assert abs(lhs - rhs) / abs(lhs) < 1e-5


@pytest.mark.parametrize("name", ["parallel", "fan-clinical"])
def test_adjoint_is_the_dense_transpose_and_norm_matches_svd(name: str) -> None:
    projector = make_projector(GEOMETRIES[name], dtype=torch.float64)
    n_pixels = TINY * TINY
    dense = projector.forward(torch.eye(n_pixels, dtype=torch.float64).reshape(n_pixels, TINY, TINY))
    dense = dense.reshape(n_pixels, -1).T  # (V*D, H*W)
    n_rays = dense.shape[0]
    dense_t = projector.adjoint(torch.eye(n_rays, dtype=torch.float64).reshape(n_rays, *projector.sinogram_shape))
    torch.testing.assert_close(dense_t.reshape(n_rays, n_pixels), dense, rtol=0, atol=1e-12)
    sigma_max = torch.linalg.svdvals(dense)[0].item()
    generator = torch.Generator().manual_seed(0)
    estimate = operator_norm(projector, (1, TINY, TINY), n_iter=500, generator=generator, dtype=torch.float64)
    assert estimate == pytest.approx(sigma_max, rel=1e-4)


@pytest.mark.parametrize(
    "geometry",
    [
        ParallelBeamGeometry(6, 1.0, 9, 1.0, (0.0, 1.0, 2.0)),
        FanBeamGeometry(6, 1.0, 11, 1.5, (0.0, 2.0, 4.0), source_to_isocenter_mm=12.0, source_to_detector_mm=20.0),
    ],
    ids=["parallel", "fan"],
)
def test_gradcheck_forward_and_adjoint(geometry) -> None:
    """First and second derivatives of forward and adjoint (double backward) match finite differences."""
    projector = make_projector(geometry, dtype=torch.float64)
    x, y = _random_pair(projector, torch.Generator().manual_seed(2), 2)
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(projector.forward, (x,))
    assert torch.autograd.gradcheck(projector.adjoint, (y,))
    assert torch.autograd.gradgradcheck(projector.forward, (x,))
    assert torch.autograd.gradgradcheck(projector.adjoint, (y,))


def test_backward_of_forward_is_the_adjoint() -> None:
    projector = make_projector(GEOMETRIES["fan"], dtype=torch.float64)
    x, y = _random_pair(projector, torch.Generator().manual_seed(3))
    x.requires_grad_(True)
    (projector.forward(x) * y).sum().backward()
    torch.testing.assert_close(x.grad, projector.adjoint(y))
    # one name for the adjoint here; torch-radon's backward / backprojection live in operators.torch_radon
    assert not hasattr(projector, "backward") and not hasattr(projector, "backprojection")


def test_any_leading_batch_dims() -> None:
    projector = make_projector(GEOMETRIES["parallel"])
    x, y = _random_pair(projector, torch.Generator().manual_seed(4), 2, 3)
    forward = projector.forward(x)
    assert forward.shape == (2, 3, *projector.sinogram_shape)
    torch.testing.assert_close(forward[1, 2], projector.forward(x[1, 2]))
    assert projector.adjoint(y).shape == (2, 3, *projector.image_shape)
    torch.testing.assert_close(projector.adjoint(y)[0, 1], projector.adjoint(y[0, 1]))
    assert projector(x[0, 0][None]).shape == (1, *projector.sinogram_shape)


def test_wrong_shape_or_dtype_is_reported() -> None:
    projector = make_projector(GEOMETRIES["parallel"])
    with pytest.raises(
        ValueError, match=rf"image has shape \({TINY}, {TINY + 1}\), expected \(\.\.\., {TINY}, {TINY}\)"
    ):
        projector.forward(torch.zeros(TINY, TINY + 1))
    views, bins = projector.sinogram_shape
    with pytest.raises(
        ValueError, match=rf"sinogram has shape \(2, {views + 1}, {bins}\), expected \(\.\.\., {views}, {bins}\)"
    ):
        projector.adjoint(np.zeros((2, views + 1, bins), dtype=np.float32))
    with pytest.raises(
        ValueError, match="image is a torch.float64 tensor on cpu but the projector holds torch.float32"
    ):
        projector.forward(torch.zeros(TINY, TINY, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor or a numpy array, got list"):
        projector.forward([[0.0] * TINY] * TINY)


def test_numpy_in_numpy_out_and_transpose_operator() -> None:
    projector = make_projector(GEOMETRIES["parallel"])
    x, y = _random_pair(projector, torch.Generator().manual_seed(5), 2)
    for dtype in (np.float32, np.float64):
        sinogram = projector.forward(x.numpy().astype(dtype))
        assert isinstance(sinogram, np.ndarray) and sinogram.dtype == dtype
        np.testing.assert_allclose(sinogram, projector.forward(x).numpy(), rtol=1e-5, atol=1e-5)
        back = projector.T(y.numpy().astype(dtype))
        assert isinstance(back, np.ndarray) and back.dtype == dtype
        np.testing.assert_allclose(back, projector.adjoint(y).numpy(), rtol=1e-5, atol=1e-5)
    assert isinstance(projector.fbp(y.numpy()), np.ndarray)
    adjoint = projector.T
    assert adjoint.image_shape == projector.sinogram_shape and adjoint.sinogram_shape == projector.image_shape
    assert adjoint.T is projector
    torch.testing.assert_close(adjoint.adjoint(x), projector.forward(x))
    # <A x, y> == <x, A^T y> through the transpose operator
    lhs = float((projector(x) * y).sum())
    rhs = float((x * projector.T(y)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-4)


def test_subset_equals_rows_of_the_full_operator() -> None:
    full = make_projector(ParallelBeamGeometry.sparse_view(12, image_size=TINY), dtype=torch.float64)
    views = [0, 3, 7, 11]
    sub = full.subset(views)
    assert sub.geometry == full.geometry.subset(views)
    x, y = _random_pair(sub, torch.Generator().manual_seed(5), 2)
    torch.testing.assert_close(sub.forward(x), full.forward(x)[:, views])
    padded = torch.zeros(2, *full.sinogram_shape, dtype=torch.float64)
    padded[:, views] = y
    torch.testing.assert_close(sub.adjoint(y), full.adjoint(padded))


def test_sparse_view_geometry_is_served_from_a_cached_full_view_operator(monkeypatch) -> None:
    full = make_projector(ParallelBeamGeometry.sparse_view(12, image_size=TINY))
    monkeypatch.setattr(cache, "build_system_matrix", _forbidden_build)
    sparse = make_projector(ParallelBeamGeometry.sparse_view(4, image_size=TINY))  # every third angle
    x = torch.rand(TINY, TINY, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(sparse.forward(x), full.forward(x)[::3])


def _forbidden_build(geometry: object) -> None:
    raise AssertionError(f"the system matrix was rebuilt for {geometry}")


def test_disk_cache_hit_after_memory_is_cleared(monkeypatch, tmp_path) -> None:
    geometry = GEOMETRIES["fan"]
    first = make_projector(geometry)
    assert make_projector(geometry) is first  # memory hit
    path = cache.cache_path(geometry)
    assert path.is_file() and path.parent == tmp_path / "operators"
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temporary file
    clear_memory_cache()
    monkeypatch.setattr(cache, "build_system_matrix", _forbidden_build)
    second = make_projector(geometry)
    assert second is not first
    x = torch.rand(TINY, TINY, generator=torch.Generator().manual_seed(7))
    assert torch.equal(second.forward(x), first.forward(x))


def test_corrupt_cache_file_is_rebuilt() -> None:
    geometry = GEOMETRIES["parallel"]
    path = cache.cache_path(geometry)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    projector = make_projector(geometry)
    assert projector.nnz > 0 and path.stat().st_size > 100


def test_float64_and_to() -> None:
    p32 = make_projector(GEOMETRIES["parallel"])
    p64 = p32.to(dtype=torch.float64)
    assert p64.dtype == torch.float64 and p64.geometry == p32.geometry
    x = torch.rand(TINY, TINY, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(p64.forward(x).float(), p32.forward(x.float()))


def test_forward_of_constant_image_is_chord_length() -> None:
    """A uniform image of value 1 projects to the ray's length inside the square (central ray = side)."""
    geometry = ParallelBeamGeometry(TINY + 1, 0.5, TINY + 1, 0.5, (0.0, math.pi / 2, math.pi / 4))
    projector = make_projector(geometry, dtype=torch.float64)
    sinogram = projector.forward(torch.ones(TINY + 1, TINY + 1, dtype=torch.float64))
    centre = TINY // 2
    side = (TINY + 1) * 0.5
    assert sinogram[0, centre].item() == pytest.approx(side)
    assert sinogram[1, centre].item() == pytest.approx(side)
    assert sinogram[2, centre].item() == pytest.approx(side * math.sqrt(2), rel=0.05)


def test_fbp_angular_weight_is_coverage_per_view() -> None:
    """pi / V for 180-degree parallel, also over 360 degrees (lines seen twice); arc / V for arcs."""
    parallel_360 = ParallelBeamGeometry(TINY, 1.0, 17, 1.0, tuple(2 * math.pi * k / 40 for k in range(40)))
    assert angular_step(parallel_360) == pytest.approx(math.pi / 40)
    assert angular_step(ParallelBeamGeometry.sparse_view(30, TINY)) == pytest.approx(math.pi / 30)
    assert angular_step(ParallelBeamGeometry.limited_angle(30, 90, TINY)) == pytest.approx(math.radians(90) / 30)
    assert angular_step(FanBeamGeometry.sparse_view(30, TINY)) == pytest.approx(2 * math.pi / 30)


@pytest.mark.gpu
def test_cuda_matches_cpu(cuda_device: torch.device) -> None:
    for name in ("parallel", "fan"):
        cpu = make_projector(GEOMETRIES[name])
        gpu = make_projector(GEOMETRIES[name], device=cuda_device)
        assert gpu.device.type == "cuda"
        x, y = _random_pair(cpu, torch.Generator().manual_seed(9), 2)
        torch.testing.assert_close(gpu.forward(x.to(cuda_device)).cpu(), cpu.forward(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gpu.adjoint(y.to(cuda_device)).cpu(), cpu.adjoint(y), rtol=1e-5, atol=1e-5)
        sinogram = cpu.forward(x)
        torch.testing.assert_close(gpu.fbp(sinogram.to(cuda_device)).cpu(), cpu.fbp(sinogram), rtol=1e-4, atol=1e-4)
        x_gpu = x.to(cuda_device).requires_grad_(True)
        (gpu.forward(x_gpu) * y.to(cuda_device).new_ones(1)).sum().backward()
        assert x_gpu.grad is not None and x_gpu.grad.device.type == "cuda"
        assert gpu.subset([0, 2]).device.type == "cuda"
