"""The shipped real sample CTs: loadable offline, identical to their sources (pydicom, ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from resample_med.io import (
    SAMPLE_CTS,
    DicomInputError,
    iter_model_slices,
    load_sample_ct,
    load_volume,
    sample,
    sample_ct_path,
)


@pytest.mark.parametrize("name", sorted(SAMPLE_CTS))
def test_committed_sample_matches_its_derivation(tmp_path: Path, name: str) -> None:
    shipped = sample.SAMPLE_DATA_DIR / SAMPLE_CTS[name].filename
    assert shipped.is_file(), f"{shipped} is missing from sample_data/"
    if SAMPLE_CTS[name].shared_file is not None and not (sample.SHARED_DIR / SAMPLE_CTS[name].shared_file).is_file():
        pytest.skip(f"the original of the {name} sample is in ../shared, absent here")
    derived = sample.derive_sample_file(name, tmp_path / "d.dcm")
    a, b = pydicom.dcmread(shipped), pydicom.dcmread(derived)
    np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
    for keyword in (
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "RescaleSlope",
        "RescaleIntercept",
    ):
        assert a[keyword].value == b[keyword].value
    assert str(a.PatientName) == sample.ANONYMOUS_NAME
    assert not any(elem.tag.is_private for elem in a)


def test_head_sample_is_a_plausible_ct() -> None:
    vol = load_sample_ct("head")
    assert vol.shape == (1, 512, 512) and vol.hu.dtype == np.float32
    assert vol.spacing_mm[1:] == pytest.approx((0.431, 0.431))
    assert vol.source["Modality"] == "CT"
    hu = vol.hu[0]
    centre = hu[200:320, 200:320]
    assert -20 < np.median(centre) < 80  # brain tissue
    assert np.percentile(hu, 95) > 300  # skull
    assert np.median(hu[:20, 200:320]) < -900  # air in front of the head
    (model,) = list(iter_model_slices(vol))
    assert model.hu.shape == (256, 256) and model.hu.min() >= -1024
    assert model.pixel_spacing_mm == pytest.approx(512 * 0.431 / 256)


def test_default_sample_is_a_chest_slice_the_prior_was_trained_for() -> None:
    assert sample.DEFAULT_SAMPLE == "chest"
    assert SAMPLE_CTS["chest"].in_distribution and not SAMPLE_CTS["head"].in_distribution
    vol = load_sample_ct()
    assert vol.shape == (1, 512, 512)
    assert vol.spacing_mm[1:] == pytest.approx((0.693, 0.693), abs=1e-3)
    hu = vol.hu[0]
    assert 0.15 < np.mean(hu < -600) < 0.7  # air and lungs
    assert 0.2 < np.mean((hu > -200) & (hu < 200)) < 0.6  # soft tissue and heart
    assert np.percentile(hu, 99.5) > 300  # spine and ribs


def test_small_sample() -> None:
    vol = load_sample_ct("small")
    assert vol.shape == (1, 128, 128)
    assert -1000 < vol.hu.min() < vol.hu.max() < 3000


def test_falls_back_to_pydicom_copy_without_sample_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = load_sample_ct("head").hu
    monkeypatch.setattr(sample, "SAMPLE_DATA_DIR", tmp_path / "absent")
    path = sample_ct_path("head")
    assert "pydicom" in str(path)
    np.testing.assert_array_equal(load_volume(path).hu, reference)
    with pytest.raises(DicomInputError, match="ships with the source checkout"):
        sample_ct_path("chest")
    with pytest.raises(KeyError, match="unknown sample CT"):
        sample_ct_path("liver")
