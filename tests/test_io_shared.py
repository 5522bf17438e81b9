"""The three real DICOM series in ../shared/dicom (skipped cleanly when ../shared is absent)."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from resample_med.io import DicomInputWarning, discover_series, iter_model_slices, load_volume, select_series

pytestmark = pytest.mark.shared


def _check_ct(volume, spacing_yx: float, gap: float) -> None:  # type: ignore[no-untyped-def]
    along = volume.slice_positions() @ volume.direction[2]
    assert np.all(np.diff(along) > 0), "slices must be strictly ascending along the normal"
    assert volume.spacing_mm[1:] == pytest.approx((spacing_yx, spacing_yx))
    assert volume.spacing_mm[0] == pytest.approx(gap)
    hu = volume.hu
    assert hu.min() >= -1100 and 1000 < hu.max() < 4000
    assert np.percentile(hu, 5) < -900  # air around the patient
    soft = hu[(hu > -200) & (hu < 200)]
    assert soft.size > 0.1 * hu.size and -120 < np.median(soft) < 100  # fat (-100) to muscle (+50)


def _files_by_position(folder: Path, series_uid: str | None = None) -> list[str]:
    records = []
    for f in folder.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        if series_uid is None or ds.SeriesInstanceUID == series_uid:
            records.append((float(ds.ImagePositionPatient[2]), str(f)))
    return [f for _, f in sorted(records)]


def test_jpeg2000_series(shared_dir: Path) -> None:
    folder = shared_dir / "dicom" / "totalseg_abdomen"
    (info,) = discover_series(folder)
    assert info.transfer_syntax.startswith("JPEG 2000") and info.uid.startswith("no-uid:")  # anonymised: no UIDs
    volume = load_volume(folder)
    assert volume.shape == (20, 512, 512)
    _check_ct(volume, 0.9765625, 2.0)
    assert volume.source["files"] == _files_by_position(folder)


def test_two_series_folder(shared_dir: Path) -> None:
    folder = shared_dir / "dicom" / "lung_pet_ct_dx_two_series"
    infos = discover_series(folder)
    assert [(s.number, s.n_slices) for s in infos] == [(2, 30), (3, 30)]
    b70, b40 = infos
    assert "B70f" in b70.description and "B40f" in b40.description
    assert select_series(infos).uid == b70.uid  # equal size: the lower SeriesNumber
    with warnings.catch_warnings():
        warnings.simplefilter("error", DicomInputWarning)
        default = load_volume(folder)
        by_uid = load_volume(folder, series=b40.uid)
        by_description = load_volume(folder, description="B40f")
    assert default.source["SeriesInstanceUID"] == b70.uid
    assert by_uid.source["SeriesInstanceUID"] == by_description.source["SeriesInstanceUID"] == b40.uid
    np.testing.assert_array_equal(by_uid.hu, by_description.hu)
    for volume in (default, by_uid):
        _check_ct(volume, 0.646484375, 8.0)
        assert volume.source["files"] == _files_by_position(folder, volume.source["SeriesInstanceUID"])
    # sharp (B70f) and soft (B40f) kernels of the same scan: same anatomy, B70f noisier
    assert np.abs(np.median(default.hu) - np.median(by_uid.hu)) < 20
    assert np.std(np.diff(default.hu[15], axis=1)) > np.std(np.diff(by_uid.hu[15], axis=1))


def test_jpeg_lossless_series_with_gaps(shared_dir: Path) -> None:
    folder = shared_dir / "dicom" / "covid_ct_md_jpegls"
    with pytest.warns(DicomInputWarning, match=r"missing slices .*-200.50\.\.-48.50 mm"):
        volume = load_volume(folder)
    assert volume.source["TransferSyntax"].startswith("JPEG Lossless")
    assert volume.shape == (40, 512, 512)
    _check_ct(volume, 0.634765625, 2.0)
    assert volume.source["files"] == _files_by_position(folder)


@pytest.mark.slow
def test_model_slices_of_a_real_series(shared_dir: Path) -> None:
    folder = shared_dir / "dicom" / "totalseg_abdomen"
    volume = load_volume(folder)
    slices = list(itertools.islice(iter_model_slices(folder), 11))  # decoded lazily, slice by slice
    assert [s.index for s in slices] == list(range(11))
    assert slices[0].pixel_spacing_mm == pytest.approx(500.0 / 256)
    np.testing.assert_array_equal(slices[3].hu, next(itertools.islice(iter_model_slices(volume), 3, None)).hu)
    back = slices[10].to_source(slices[10].hu)
    body = volume.hu[10] > -500
    assert np.median(np.abs(back - volume.hu[10])[body]) < 30
