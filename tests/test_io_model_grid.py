"""Model-grid resampling of axial slices and its inverse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from io_synthetic import write_series
from scipy.ndimage import gaussian_filter

from resample_med.io import ModelGrid, ModelGridConfig, dicom_reader, iter_model_slices, load_volume


def _smooth_image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (gaussian_filter(rng.normal(size=shape), 10) * 3000).astype(np.float32)


@pytest.mark.parametrize(
    ("shape", "spacing", "expected_spacing"),
    [((512, 512), (0.5, 0.5), 1.0), ((400, 512), (0.7, 0.5), 400 * 0.7 / 256), ((128, 128), (0.66, 0.66), 0.33)],
)
def test_round_trip_and_spacing(shape: tuple[int, int], spacing: tuple[float, float], expected_spacing: float) -> None:
    image = _smooth_image(shape)
    grid = ModelGrid.for_slices(shape, spacing)
    model = grid.to_model(image)
    assert model.shape == (256, 256) and model.dtype == np.float32
    assert grid.spacing_mm == pytest.approx(expected_spacing)
    back = grid.to_source(model)
    assert back.shape == shape
    assert np.abs(back - image).max() < 0.05 * np.abs(image).max()


def test_physical_centre_is_kept_and_short_side_padded_with_air() -> None:
    y, x = np.mgrid[:300, :512]
    dy, dx = 0.9, 0.5  # 270 mm x 256 mm field of view
    disc = ((y - 149.5) * dy) ** 2 + ((x - 255.5) * dx) ** 2 < 20**2
    grid = ModelGrid.for_slices((300, 512), (dy, dx))
    model = grid.to_model(np.where(disc, 500.0, 0.0).astype(np.float32))
    rows, cols = np.nonzero(model > 250)
    assert rows.mean() == pytest.approx(127.5, abs=0.3) and cols.mean() == pytest.approx(127.5, abs=0.3)
    assert np.all(model[:, :5] == -1024) and np.all(model[:, -5:] == -1024)  # 256 mm side padded to 270 mm
    assert np.all(model[:, 10:-10] > -1)


def test_values_below_air_are_clipped_by_default() -> None:
    image = np.full((64, 64), -3024.0, dtype=np.float32)
    assert ModelGrid.for_slices((64, 64), (1.0, 1.0)).to_model(image).min() == -1024
    keep = ModelGrid.for_slices((64, 64), (1.0, 1.0), ModelGridConfig(min_hu=None))
    assert keep.to_model(image).min() < -3000


def test_fixed_spacing_crops_and_to_source_takes_background() -> None:
    image = _smooth_image((512, 512))
    grid = ModelGrid.for_slices((512, 512), (0.5, 0.5), ModelGridConfig(size=128, pixel_spacing_mm=1.0))
    back = grid.to_source(grid.to_model(image), background=image)
    np.testing.assert_array_equal(back[:100], image[:100])  # outside the 128 mm crop
    assert np.abs(back[200:312, 200:312] - image[200:312, 200:312]).max() < 0.05 * np.abs(image).max()
    assert grid.to_source(grid.to_model(image))[0, 0] == -1024


def test_iter_model_slices_from_volume_and_path_agree(tmp_path: Path) -> None:
    write_series(tmp_path, 4, rows=40, cols=32)
    volume = load_volume(tmp_path)
    from_volume = list(iter_model_slices(volume, size=64))
    from_path = list(iter_model_slices(tmp_path, size=64))
    assert [s.index for s in from_path] == [0, 1, 2, 3]
    for a, b in zip(from_volume, from_path, strict=True):
        np.testing.assert_array_equal(a.hu, b.hu)
        np.testing.assert_allclose(a.position_mm, b.position_mm)
        assert a.hu.shape == (64, 64) and a.pixel_spacing_mm == pytest.approx(40 * 0.8 / 64)
        assert a.to_source(a.hu).shape == (40, 32)


def test_path_iteration_decodes_one_slice_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_series(tmp_path, 5)
    calls: list[int] = []
    original = dicom_reader._slice_hu

    def counting(sorted_series, k):  # type: ignore[no-untyped-def]
        calls.append(k)
        return original(sorted_series, k)

    monkeypatch.setattr(dicom_reader, "_slice_hu", counting)
    iterator = iter_model_slices(tmp_path, size=32)
    next(iterator)
    assert calls == [0]
    next(iterator)
    assert calls == [0, 1]


def test_to_source_volume(tmp_path: Path) -> None:
    write_series(tmp_path, 3)
    volume = load_volume(tmp_path)
    slices = list(iter_model_slices(volume, config="default"))
    back = slices[0].grid.to_source_volume(np.stack([s.hu for s in slices]))
    assert back.shape == volume.shape
    assert np.median(np.abs(back - np.maximum(volume.hu, -1024))) < 5.0
