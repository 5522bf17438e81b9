"""Geometry dataclasses: constructors, presets, subsets, serialisation, cache keys, validation."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from resample_med.geometry import (
    CLINICAL_SOURCE_TO_DETECTOR_MM,
    CLINICAL_SOURCE_TO_ISOCENTER_MM,
    FanBeamGeometry,
    ParallelBeamGeometry,
    geometry_from_dict,
)


def test_parallel_sparse_view_spans_180_degrees_and_covers_the_diagonal() -> None:
    geom = ParallelBeamGeometry.sparse_view(60, image_size=256, pixel_spacing_mm=0.7)
    assert geom.n_views == 60
    assert geom.angles[0] == 0.0
    steps = [b - a for a, b in zip(geom.angles[:-1], geom.angles[1:], strict=True)]
    assert all(math.isclose(s, math.pi / 60) for s in steps)
    assert geom.det_spacing_mm == 0.7
    assert geom.det_count * geom.det_spacing_mm >= math.sqrt(2) * geom.fov_mm
    assert geom.sinogram_shape == (60, geom.det_count)
    assert ParallelBeamGeometry.sparse_view(10, image_size=256).det_count == 363  # as skimage's radon


def test_fan_sparse_view_spans_360_degrees_and_sees_the_whole_image() -> None:
    geom = FanBeamGeometry.sparse_view(90, image_size=128, pixel_spacing_mm=2.0)
    assert geom.n_views == 90
    assert math.isclose(geom.angles[1] - geom.angles[0], 2 * math.pi / 90)
    # The outermost bin's ray must pass outside the image's circumscribed circle.
    half_width = geom.det_count * geom.det_spacing_mm / 2
    half_fan = math.atan(half_width / geom.source_to_detector_mm)
    assert geom.source_to_isocenter_mm * math.sin(half_fan) >= geom.fov_mm * math.sqrt(2) / 2
    assert math.isclose(geom.isocenter_det_spacing_mm, geom.pixel_spacing_mm)


def test_clinical_preset_uses_clinical_distances() -> None:
    geom = FanBeamGeometry.clinical(64, image_size=256)
    assert geom.source_to_isocenter_mm == CLINICAL_SOURCE_TO_ISOCENTER_MM
    assert geom.source_to_detector_mm == CLINICAL_SOURCE_TO_DETECTOR_MM
    assert 1.5 < geom.magnification < 2.0
    assert geom.fov_mm == pytest.approx(500.0)
    assert FanBeamGeometry.clinical(8, image_size=64, pixel_spacing_mm=1.0).fov_mm == 64.0


def test_limited_angle_arc() -> None:
    geom = ParallelBeamGeometry.limited_angle(30, arc_deg=120, start_deg=10)
    assert geom.n_views == 30
    assert math.isclose(geom.angles[0], math.radians(10))
    assert geom.angles[-1] < math.radians(130)
    fan = FanBeamGeometry.limited_angle(20, arc_deg=200, image_size=64)
    assert fan.n_views == 20 and fan.angles[-1] < math.radians(200)


def test_frozen_hashable_and_equal_by_value() -> None:
    a = ParallelBeamGeometry.sparse_view(20, image_size=64)
    b = ParallelBeamGeometry.sparse_view(20, image_size=64)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.det_count = 3  # type: ignore[misc]
    list_angles = ParallelBeamGeometry(8, 1.0, 12, 1.0, [0.0, 1.0])  # type: ignore[arg-type]
    assert isinstance(list_angles.angles, tuple)


def test_json_round_trip_and_stable_cache_key() -> None:
    for geom in (ParallelBeamGeometry.sparse_view(7, image_size=32), FanBeamGeometry.clinical(5, image_size=32)):
        data = json.loads(json.dumps(geom.to_dict()))
        assert geometry_from_dict(data) == geom
        assert type(geom).from_dict(data) == geom
        assert geom.cache_key() == geometry_from_dict(data).cache_key()
    keys = {ParallelBeamGeometry.sparse_view(n, image_size=32).cache_key() for n in (7, 8)}
    assert len(keys) == 2
    with pytest.raises(ValueError, match="unknown geometry type"):
        geometry_from_dict({"type": "cone"})


def test_subset_keeps_everything_but_the_angles() -> None:
    geom = FanBeamGeometry.sparse_view(12, image_size=32)
    sub = geom.subset([0, 4, 8])
    assert isinstance(sub, FanBeamGeometry)
    assert sub.angles == (geom.angles[0], geom.angles[4], geom.angles[8])
    assert sub.same_except_angles(geom) and not sub.same_except_angles(ParallelBeamGeometry.sparse_view(3, 32))
    with pytest.raises(IndexError, match="out of range"):
        geom.subset([12])


def test_invalid_geometries_are_rejected_with_the_field_and_reason() -> None:
    with pytest.raises(ValueError, match="FanBeamGeometry source_to_isocenter_mm=40.0 .*source"):
        FanBeamGeometry(64, 1.0, 100, 1.0, (0.0,), source_to_isocenter_mm=40.0, source_to_detector_mm=80.0)
    with pytest.raises(ValueError, match="source_to_detector_mm"):
        FanBeamGeometry(64, 1.0, 100, 1.0, (0.0,), source_to_isocenter_mm=100.0, source_to_detector_mm=90.0)
    with pytest.raises(ValueError, match="at least one view"):
        ParallelBeamGeometry(64, 1.0, 100, 1.0, ())
    with pytest.raises(ValueError, match="must be > 0"):
        ParallelBeamGeometry(64, 0.0, 100, 1.0, (0.0,))
