"""Volume mode: slices coupled along z (ReSample's z-penalised consistency, 3-D TV) over blended slabs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from resample_med.io import CTVolume
from resample_med.models import create_bundle
from resample_med.pipeline import (
    AcquisitionConfig,
    SliceCheckpoint,
    VolumeMode,
    reconstruct_slabs,
    reconstruct_slices,
    reconstruct_volume,
    simulate_measurements,
)
from resample_med.pipeline import slabs as slabs_module
from resample_med.pipeline.slabs import blend_weights, slab_ranges
from resample_med.sampling import resolve_method_config
from resample_med.sampling.baselines.tv import volume_gradient, volume_gradient_adjoint
from resample_med.sampling.config import FAST_FROM_NOISE
from resample_med.sampling.linalg import cgls_solve
from resample_med.sampling.testing import DenseOperator
from resample_med.sampling.zcoupling import z_coupled_cgls, z_difference, z_difference_adjoint

SIZE = 32
"""Grid side of the tiny test model."""

SHORT_RESAMPLE = dataclasses.replace(
    FAST_FROM_NOISE, num_steps=3, final_max_iter=5, latent=dataclasses.replace(FAST_FROM_NOISE.latent, max_iter=2)
)
"""ReSample cut to a few network calls (the fast preset's final pixel fit, 5 iterations), from noise
with one sample: the slab border test needs slabs that disagree, which a shared TV start hides."""


@pytest.fixture(scope="module")
def tiny_prior():
    """An untrained tiny bundle (32x32 images)."""
    return create_bundle("tiny", seed=0)


def smooth_volume(n: int, size: int = SIZE) -> np.ndarray:
    """``(n, size, size)`` HU that change slowly along z: a water disc whose radius and a bone
    insert whose size grow with the slice index."""
    z = np.arange(n)[:, None, None]
    y = np.arange(size)[None, :, None]
    x = np.arange(size)[None, None, :]
    hu = np.full((n, size, size), -1000.0, dtype=np.float32)
    hu[
        np.broadcast_to(
            (y - size / 2) ** 2 + (x - size / 2) ** 2 < (size * (0.3 + 0.05 * np.sin(z / n * np.pi))) ** 2, hu.shape
        )
    ] = 40.0
    hu[np.broadcast_to((y - 14) ** 2 + (x - 18) ** 2 < (3 + 2 * z / n) ** 2, hu.shape)] = 700.0
    return hu


def as_volume(hu: np.ndarray) -> CTVolume:
    return CTVolume(
        hu=hu, spacing_mm=(1.0, 1.5, 1.5), origin_mm=np.zeros(3), direction=np.eye(3), source={"format": "test"}
    )


def z_derivative_rmse(recon: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.diff(recon, axis=0) - np.diff(truth, axis=0)) ** 2)))


def measured(hu: np.ndarray, n_views: int = 8, photons: float | None = 1e4):
    return simulate_measurements(
        hu, 1.5, AcquisitionConfig(n_views=n_views, photons=photons), generator=torch.Generator().manual_seed(0)
    )


# ---------------------------------------------------------------------------------------------
# the solver parts


def test_z_difference_and_volume_gradient_adjoints_are_exact():
    gen = torch.Generator().manual_seed(0)
    for stride in (1, 2):
        x = torch.randn(6, 1, 5, 5, generator=gen, dtype=torch.float64)
        d = torch.randn(6 - stride, 1, 5, 5, generator=gen, dtype=torch.float64)
        assert torch.isclose((z_difference(x, stride) * d).sum(), (x * z_difference_adjoint(d, 6, stride)).sum())
    g = torch.randn(6, 3, 5, 5, generator=gen, dtype=torch.float64)
    assert torch.isclose((volume_gradient(x, 0.7) * g).sum(), (x * volume_gradient_adjoint(g, 0.7)).sum())


def test_z_coupled_cgls_solves_the_penalised_normal_equations():
    gen = torch.Generator().manual_seed(1)
    op = DenseOperator.random(4, (3, 4), gen)  # 12 rows, 16 unknowns per slice: under-determined
    op.matrix = op.matrix.double()
    y = torch.randn(5, 1, 3, 4, generator=gen, dtype=torch.float64)
    x0 = torch.zeros(5, 1, 4, 4, dtype=torch.float64)
    lam = 0.3
    x, _ = z_coupled_cgls(op, y, x0, z_scale=lam, max_iter=400, rtol=1e-12)
    # the normal equations A^T (A x - y) + lam D_z^T D_z x = 0 hold
    grad = op.adjoint(op.forward(x) - y) + lam * z_difference_adjoint(z_difference(x), 5)
    assert grad.abs().max() < 1e-8
    # without the penalty it is slice mode's per-slice CGLS, bit for bit
    a, _ = z_coupled_cgls(op, y, x0, z_scale=0.0, max_iter=7)
    b, _ = cgls_solve(op, y, x0, max_iter=7)
    assert torch.equal(a, b)


def test_slabs_cover_every_slice_and_blend_to_one():
    assert slab_ranges(5, 16, 2) == [(0, 5)]
    assert slab_ranges(24, 16, 2) == [(0, 16), (14, 24)]
    ranges = slab_ranges(10, 4, 2)
    total = np.zeros(10)
    weights = blend_weights(ranges, 10)
    for (start, stop), w in zip(ranges, weights):
        total[start:stop] += w
        assert np.all(w >= 0)
    np.testing.assert_allclose(total, 1.0)
    # a slab's end slice inside the volume gets no weight; the cross-fade ramps in between
    np.testing.assert_allclose(weights[1], [0.0, 1.0, 1.0, 0.0])
    ranges = slab_ranges(16, 8, 4)
    np.testing.assert_allclose(blend_weights(ranges, 16)[1], [0, 1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3, 0])
    with pytest.raises(ValueError, match="overlap"):
        VolumeMode(slab_slices=4, overlap=3)
    with pytest.raises(ValueError, match="z_weight"):
        VolumeMode(z_weight=-1.0)


# ---------------------------------------------------------------------------------------------
# volume mode against slice mode


def test_volume_mode_with_zero_z_weight_equals_slice_mode(tiny_prior):
    volume = as_volume(smooth_volume(6))
    acquisition = AcquisitionConfig(n_views=8, photons=1e4)
    slices = reconstruct_volume(volume, acquisition, "resample", tiny_prior, SHORT_RESAMPLE, batch_size=3)
    joint = reconstruct_volume(
        volume,
        acquisition,
        "resample",
        tiny_prior,
        SHORT_RESAMPLE,
        batch_size=3,
        volume_mode=VolumeMode(z_weight=0.0, slab_slices=3, overlap=0),
    )
    np.testing.assert_array_equal(joint.volume.hu, slices.volume.hu)
    assert joint.info["volume_mode"]["z_weight_used"] == 0.0
    # TV is deterministic: with overlapping, blended slabs it still equals slice mode
    data = measured(smooth_volume(6))
    tv_slices = reconstruct_slices(data, "tv", config="fast", batch_size=6)
    tv_slabs = reconstruct_slabs(data, "tv", config="fast", mode=VolumeMode(z_weight=0.0, slab_slices=4, overlap=2))
    np.testing.assert_allclose(tv_slabs.hu, tv_slices.hu, atol=0.5)


def test_z_weight_follows_the_slice_spacing():
    """The weights are stated for 1 mm slices: ReSample's quadratic penalty scales as (1 mm / dz)^2,
    3-D TV's as 1 mm / dz; reconstruct_volume takes dz from the series."""
    from resample_med.pipeline.slabs import coupled_config

    assert coupled_config(
        "resample", "fast", VolumeMode(z_weight=0.09, slice_spacing_mm=3.0)
    ).z_weight == pytest.approx(0.01)
    assert coupled_config("tv", "fast", VolumeMode(z_weight=0.9, slice_spacing_mm=3.0)).z_weight == pytest.approx(0.3)
    assert coupled_config("tv", "fast", VolumeMode(z_weight=0.9)).z_weight == pytest.approx(0.9)
    with pytest.raises(ValueError, match="slice_spacing_mm"):
        VolumeMode(slice_spacing_mm=0.0)
    thick = dataclasses.replace(as_volume(smooth_volume(3)), spacing_mm=(2.0, 1.5, 1.5))
    rec = reconstruct_volume(
        thick, AcquisitionConfig(n_views=8), "tv", config="fast", volume_mode=VolumeMode(z_weight=1.0)
    )
    assert rec.info["volume_mode"]["z_weight_used"] == pytest.approx(0.5)
    assert rec.info["volume_mode"]["slice_spacing_mm"] == 2.0


@pytest.mark.parametrize(
    "method, config, z_weight, photons",
    [
        ("resample", SHORT_RESAMPLE, 0.1, 1e4),
        ("tv", "fast", 1.0, 3e2),  # TV alone already removes most noise at 1e4 photons; z-TV pays where noise is high
    ],
)
def test_z_term_lowers_the_z_derivative_error(tiny_prior, method, config, z_weight, photons):
    truth = smooth_volume(8)
    data = measured(truth, photons=photons)
    prior = tiny_prior if method == "resample" else None
    alone = reconstruct_slabs(data, method, prior, config, mode=VolumeMode(z_weight=0.0, slab_slices=8))
    coupled = reconstruct_slabs(data, method, prior, config, mode=VolumeMode(z_weight=z_weight, slab_slices=8))
    assert z_derivative_rmse(coupled.hu, truth) < 0.9 * z_derivative_rmse(alone.hu, truth)


def border_and_inside_steps(hu: np.ndarray, truth: np.ndarray, ranges: list[tuple[int, int]]) -> tuple[float, float]:
    """Largest z-step error ``|D_z (recon - truth)|`` (RMS over the slice) where the slabs covering
    two neighbours differ (a slab border or its blend zone) and where one slab covers both."""
    steps = np.sqrt(np.mean((np.diff(hu, axis=0) - np.diff(truth, axis=0)) ** 2, axis=(1, 2)))
    cover = [{k for k, (a, b) in enumerate(ranges) if a <= i < b} for i in range(hu.shape[0])]
    border = [s for i, s in enumerate(steps) if cover[i] != cover[i + 1] or len(cover[i]) > 1]
    inside = [s for i, s in enumerate(steps) if cover[i] == cover[i + 1] and len(cover[i]) == 1]
    return float(max(border)), float(max(inside))


def test_slab_borders_do_not_show(tiny_prior):
    truth = np.repeat(smooth_volume(1), 16, axis=0)  # constant along z: every z step is an error
    data = measured(truth, photons=3e2)
    blended = VolumeMode(z_weight=1.0, slab_slices=8, overlap=4)  # slabs (0, 8) (4, 12) (8, 16)
    tv = reconstruct_slabs(data, "tv", config="fast", mode=blended)
    border, inside = border_and_inside_steps(tv.hu, truth, slab_ranges(16, 8, 4))
    assert border <= inside
    # ReSample's slabs are sampled (same noise per slice in both slabs, different z neighbours):
    # the blend removes the step that slabs meeting without overlap leave
    data = measured(truth)
    mode = dataclasses.replace(blended, z_weight=0.3)
    rec = reconstruct_slabs(data, "resample", tiny_prior, SHORT_RESAMPLE, mode=mode, batch_size=4)
    border_blended, _ = border_and_inside_steps(rec.hu, truth, slab_ranges(16, 8, 4))
    hard = dataclasses.replace(mode, overlap=0)
    rec = reconstruct_slabs(data, "resample", tiny_prior, SHORT_RESAMPLE, mode=hard, batch_size=4)
    border_hard, inside_hard = border_and_inside_steps(rec.hu, truth, slab_ranges(16, 8, 0))
    assert border_hard > 2 * inside_hard  # without overlap the border shows ...
    assert border_blended < 0.5 * border_hard  # ... and blending removes most of it


# ---------------------------------------------------------------------------------------------
# batch limits, resume, progress, refusals


class CountingPrior:
    """The tiny prior, recording the batch of every network call that reaches it."""

    def __init__(self, prior) -> None:
        self.prior = prior
        self.sizes: list[int] = []

    def __getattr__(self, name):
        return getattr(self.prior, name)

    def encode(self, x):
        self.sizes.append(int(x.shape[0]))
        return self.prior.encode(x)

    def decode(self, z):
        self.sizes.append(int(z.shape[0]))
        return self.prior.decode(z)

    def predict_noise(self, z, t):
        self.sizes.append(int(z.shape[0]))
        return self.prior.predict_noise(z, t)


def test_network_calls_respect_the_batch_size(tiny_prior):
    counting = CountingPrior(tiny_prior)
    data = measured(smooth_volume(6))
    mode = VolumeMode(z_weight=0.1, slab_slices=6, overlap=0)
    rec = reconstruct_slabs(data, "resample", counting, SHORT_RESAMPLE, mode=mode, batch_size=2, n_samples=2)
    assert counting.sizes and max(counting.sizes) == 4  # 2 slices x 2 samples, though the slab holds 6 slices
    assert rec.std_hu is not None and rec.std_hu.shape == rec.hu.shape


def test_interrupted_volume_mode_resumes_to_the_same_result(tiny_prior, tmp_path, monkeypatch):
    data = measured(smooth_volume(7))
    mode = VolumeMode(z_weight=0.1, slab_slices=3, overlap=1)  # slabs (0,3) (2,5) (4,7)
    fresh = reconstruct_slabs(data, "resample", tiny_prior, SHORT_RESAMPLE, mode=mode, seed=4)
    calls: list[int] = []
    real = slabs_module.reconstruct

    def interrupting(method, y, *args, **kwargs):
        calls.append(int(y.shape[0]))
        if len(calls) == 3 and fail:
            raise KeyboardInterrupt
        return real(method, y, *args, **kwargs)

    monkeypatch.setattr(slabs_module, "reconstruct", interrupting)
    fail = True
    with pytest.raises(KeyboardInterrupt):
        reconstruct_slabs(
            data,
            "resample",
            tiny_prior,
            SHORT_RESAMPLE,
            mode=mode,
            seed=4,
            checkpoint=SliceCheckpoint.open(tmp_path / "partial", {"test": 1}),
        )
    fail = False
    calls.clear()
    progress: list[tuple[int, int]] = []
    resumed = reconstruct_slabs(
        data,
        "resample",
        tiny_prior,
        SHORT_RESAMPLE,
        mode=mode,
        seed=4,
        checkpoint=SliceCheckpoint.open(tmp_path / "partial", {"test": 1}),
        on_slices=lambda done, total: progress.append((done, total)),
    )
    assert calls == [3, 3]  # slices 0-3 were final: the slabs covering slices 4-6 ran again
    assert [r["resumed"] for r in resumed.per_slice] == [True] * 4 + [False] * 3
    assert progress[-1] == (7, 7)
    np.testing.assert_allclose(resumed.hu, fresh.hu, atol=1e-3)


def test_coupled_configs_are_refused_where_slices_are_not_contiguous():
    data = measured(smooth_volume(2), photons=None)
    with pytest.raises(ValueError, match="volume mode"):
        reconstruct_slices(data, "tv", config=dataclasses.replace(resolve_method_config("tv", "fast"), z_weight=1.0))
    with pytest.raises(ValueError, match="no volume mode"):
        reconstruct_slabs(data, "fbp")


# ---------------------------------------------------------------------------------------------
# the command line and the napari widget's request


def test_cli_volume_mode_runs_records_and_refuses_bad_requests(tmp_path, capsys):
    from test_cli import FAST, N_SLICES, short_resample_config, write_series

    from resample_med.cli import main

    model = str(create_bundle("tiny", seed=0).save(tmp_path / "tiny_model"))
    source = write_series(tmp_path / "study")
    out = tmp_path / "out"
    code = main(
        [
            "reconstruct",
            str(source),
            str(out),
            "--model",
            model,
            "--method",
            "resample",
            "--preset",
            "fast",
            "--config",
            str(short_resample_config(tmp_path)),
            "--steps",
            "2",
            "--volume-mode",
            "--z-weight",
            "0.1",
            *FAST,
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["reconstruction"]["volume_mode"] is True
    assert report["config"]["reconstruction"]["z_weight"] == 0.1
    assert len(report["per_slice"]) == N_SLICES
    capsys.readouterr()
    assert main(["reconstruct", str(source), str(tmp_path / "o2"), "--method", "fbp", "--volume-mode", *FAST]) == 2
    assert "--volume-mode works with --method" in capsys.readouterr().err
    assert main(["reconstruct", str(source), str(tmp_path / "o3"), "--method", "tv", "--z-weight", "1", *FAST]) == 2
    assert "add --volume-mode" in capsys.readouterr().err


def test_widget_request_carries_volume_mode():
    from napari_plugin._job import ReconstructionRequest

    request = ReconstructionRequest(
        acquisition=AcquisitionConfig(), method="tv", preset="fast", steps=20, gamma=40.0, volume_mode=True
    )
    assert request.pipeline_volume_mode() == VolumeMode()
    assert request.slices_per_call() == VolumeMode().slab_slices
    assert "volume mode" in request.describe()
    assert dataclasses.replace(request, volume_mode=False).pipeline_volume_mode() is None
