"""Discovery, selection and loading of synthetic DICOM series written by the tests."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from io_synthetic import slice_hu, write_series, write_slice
from pydicom.uid import generate_uid

from resample_med.io import (
    CTVolume,
    DicomInputError,
    DicomInputWarning,
    MissingDecoderError,
    PositionSortedDicomReader,
    discover_series,
    load_volume,
    pixel_decoding,
    select_series,
)


def _load_quiet(path: Path, **kwargs: object) -> CTVolume:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DicomInputWarning)
        return load_volume(path, **kwargs)  # type: ignore[arg-type]


def test_scrambled_instance_numbers_are_ordered_by_position(tmp_path: Path) -> None:
    numbers = list(range(1, 7))
    random.Random(3).shuffle(numbers)
    _, expected, uid = write_series(tmp_path, 6, instance_numbers=numbers)
    vol = _load_quiet(tmp_path)
    np.testing.assert_allclose(vol.hu, expected)
    z = vol.slice_positions()[:, 2]
    assert np.all(np.diff(z) > 0)
    assert vol.spacing_mm == pytest.approx((2.5, 0.8, 0.7))
    assert vol.source["SeriesInstanceUID"] == uid
    np.testing.assert_allclose(vol.origin_mm, [-8.0, -9.0, -10.0])


def test_missing_instance_numbers_series_number_and_description_are_fine(tmp_path: Path) -> None:
    _, expected, _ = write_series(tmp_path, 4, instance_numbers=[None] * 4, series_number=None, description="")
    np.testing.assert_allclose(_load_quiet(tmp_path).hu, expected)


def test_missing_rescale_is_assumed_identity_with_a_warning(tmp_path: Path) -> None:
    _, expected, _ = write_series(tmp_path, 3, slope=None, intercept=None)
    with pytest.warns(DicomInputWarning, match="RescaleSlope/RescaleIntercept missing"):
        vol = load_volume(tmp_path)
    np.testing.assert_allclose(vol.hu, expected)


def test_missing_position_refuses_to_guess_from_instance_number(tmp_path: Path) -> None:
    write_series(tmp_path, 3)
    write_slice(
        tmp_path / "nopos.dcm",
        slice_hu(9, 24, 20),
        position=None,
        series_uid=discover_series(tmp_path)[0].uid,
        study_uid="1.2.3",
        frame_uid="1.2.4",
    )
    with pytest.raises(DicomInputError, match="nopos.dcm.*never by InstanceNumber"):
        load_volume(tmp_path)


def test_missing_pixel_spacing_is_an_error(tmp_path: Path) -> None:
    write_series(tmp_path, 2, spacing=None)
    with pytest.raises(DicomInputError, match="PixelSpacing is missing"):
        load_volume(tmp_path)


def test_gap_warns_naming_positions(tmp_path: Path) -> None:
    _, expected, _ = write_series(tmp_path, 8, skip=(4, 5))
    with pytest.warns(DicomInputWarning, match=r"missing slices .* between positions -2.50\.\.5\.00 mm"):
        vol = load_volume(tmp_path)
    np.testing.assert_allclose(vol.hu, expected)
    assert vol.spacing_mm[0] == pytest.approx(2.5)
    np.testing.assert_allclose(vol.slice_positions()[:, 2], [-10, -7.5, -5, -2.5, 5, 7.5])


def test_uneven_spacing_warns(tmp_path: Path) -> None:
    write_series(tmp_path, 5)
    write_series(tmp_path, 1, z0=3.1, prefix="odd", series_uid=discover_series(tmp_path)[0].uid)
    with pytest.warns(DicomInputWarning, match="uneven slice spacing"):
        load_volume(tmp_path)


def test_duplicate_positions_keep_one_slice_with_a_warning(tmp_path: Path) -> None:
    _, expected, uid = write_series(tmp_path, 4)
    write_series(tmp_path, 2, prefix="dup", series_uid=uid)
    with pytest.warns(DicomInputWarning, match="duplicate positions"):
        vol = load_volume(tmp_path)
    assert vol.n_slices == 4
    np.testing.assert_allclose(vol.hu, expected)


def test_two_series_in_one_folder(tmp_path: Path) -> None:
    _, big, big_uid = write_series(tmp_path, 6, prefix="a", series_number=2, description="Thorax B70f")
    _, small, small_uid = write_series(tmp_path, 3, prefix="b", series_number=3, description="Thorax B40f", z0=50.0)
    infos = discover_series(tmp_path)
    assert [(s.number, s.n_slices, s.modality, s.orientation) for s in infos] == [
        (2, 6, "CT", "axial"),
        (3, 3, "CT", "axial"),
    ]
    assert select_series(infos).uid == big_uid
    assert select_series(infos, small_uid).uid == small_uid
    assert select_series(infos, 3).uid == small_uid
    assert select_series(infos, description="b40F").uid == small_uid
    np.testing.assert_allclose(_load_quiet(tmp_path, description="B40f").hu, small)
    np.testing.assert_allclose(_load_quiet(tmp_path).hu, big)
    with pytest.raises(DicomInputError, match="matches 2 series"):
        select_series(infos, description="thorax")
    with pytest.raises(DicomInputError, match="no series with SeriesDescription containing 'B99'"):
        select_series(infos, description="B99")
    with pytest.raises(DicomInputError, match="no series with SeriesInstanceUID or SeriesNumber 'B40f'"):
        select_series(infos, "B40f")  # a selector is a UID or a number, never a description


def test_mr_series_is_refused(tmp_path: Path) -> None:
    write_series(tmp_path, 3, modality="MR", description="T1 brain")
    with pytest.raises(DicomInputError, match="no axial CT series found.*MR"):
        load_volume(tmp_path)
    with pytest.raises(DicomInputError, match="modality 'MR'"):
        load_volume(tmp_path, description="T1")


def test_non_axial_series_is_refused(tmp_path: Path) -> None:
    write_series(tmp_path, 3, orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0), description="sag")
    assert discover_series(tmp_path)[0].orientation == "sagittal"
    with pytest.raises(DicomInputError, match="sagittal, not axial"):
        load_volume(tmp_path, description="sag")


def test_gantry_tilt_is_accepted(tmp_path: Path) -> None:
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    _, expected, _ = write_series(tmp_path, 3, orientation=(1.0, 0.0, 0.0, 0.0, c, -s))
    vol = _load_quiet(tmp_path)
    assert discover_series(tmp_path)[0].tilt_deg == pytest.approx(20.0)
    np.testing.assert_allclose(vol.hu, expected)


def test_flipped_in_plane_axes_become_display_convention(tmp_path: Path) -> None:
    _, expected, _ = write_series(tmp_path, 2, orientation=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0))
    vol = _load_quiet(tmp_path)
    np.testing.assert_allclose(vol.direction, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(vol.hu, expected[:, ::-1, ::-1])
    # the pixel stored first (row 0, column 0) keeps its patient position
    first = np.array([-8.0, -9.0, -10.0])
    last_voxel = (
        vol.origin_mm + (vol.shape[2] - 1) * 0.7 * vol.direction[0] + (vol.shape[1] - 1) * 0.8 * vol.direction[1]
    )
    np.testing.assert_allclose(last_voxel, first)
    assert vol.source["flipped_axes"] == ["x", "y"]


def test_corrupted_and_non_dicom_files(tmp_path: Path) -> None:
    paths, expected, _ = write_series(tmp_path, 5)
    (tmp_path / "README.txt").write_text("not dicom")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "junk.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "broken.dcm").write_bytes(paths[0].read_bytes()[:500])  # header cut short
    truncated = paths[2].read_bytes()  # pixel data cut short
    paths[2].write_bytes(truncated[: len(truncated) - 300])
    with pytest.raises(DicomInputError, match=r"2 bad file\(s\) would leave a hole.*broken.dcm.*s002.dcm") as refused:
        load_volume(tmp_path)
    assert "README.txt" not in str(refused.value) and "junk.bin" not in str(refused.value)
    with pytest.warns(DicomInputWarning) as record:
        vol = load_volume(tmp_path, skip_bad_slices=True)
    messages = " | ".join(str(w.message) for w in record)
    assert "skipped 2 bad file(s): broken.dcm" in messages and "s002.dcm (cannot decode pixel data" in messages
    assert "README.txt" not in messages and "junk.bin" not in messages
    np.testing.assert_allclose(vol.hu, expected[[0, 1, 3, 4]])
    assert [Path(s["file"]).name for s in vol.source["skipped_files"]] == ["broken.dcm", "s002.dcm"]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: None, "the folder is empty"),
        (lambda p: (p / "a.txt").write_text("hello"), "no DICOM files"),
        (lambda p: (p / "x").mkdir(), "the folder is empty"),
        (lambda p: (p / "ct.nii.gz").write_bytes(b"\x1f\x8b"), "for NIfTI give the file itself, e.g. ct.nii.gz"),
    ],
)
def test_empty_or_dicom_free_folders(tmp_path: Path, make, match: str) -> None:
    make(tmp_path)
    with pytest.raises(DicomInputError, match=match) as info:
        load_volume(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DicomInputError, match="does not exist"):
        load_volume(tmp_path / "nope")


def test_files_without_series_uid_are_grouped(tmp_path: Path) -> None:
    _, expected, _ = write_series(tmp_path, 3, series_uid="")
    infos = discover_series(tmp_path)
    assert len(infos) == 1 and infos[0].uid.startswith("no-uid:")
    np.testing.assert_allclose(_load_quiet(tmp_path).hu, expected)


def test_monai_load_image_with_our_reader(tmp_path: Path) -> None:
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage

    _, expected, _ = write_series(tmp_path, 4, instance_numbers=[4, 2, 3, 1])
    loaded = LoadImage(image_only=True)(str(tmp_path), reader=PositionSortedDicomReader())
    image = Compose([EnsureChannelFirst(channel_dim="no_channel")])(loaded)
    assert tuple(image.shape) == (1, 4, 24, 20)
    np.testing.assert_allclose(image[0].numpy(), expected)
    affine = image.affine.numpy()
    np.testing.assert_allclose(affine[:3, 0], [0, 0, 2.5])  # z index steps along the normal
    np.testing.assert_allclose(affine[:3, 3], [-8.0, -9.0, -10.0])


def test_missing_decoder_falls_back_to_simpleitk_then_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from resample_med.io import load_sample_ct

    reference = load_sample_ct("head").hu
    monkeypatch.setattr(pixel_decoding, "pydicom_can_decode", lambda ts: False)
    np.testing.assert_array_equal(load_sample_ct("head").hu, reference)
    monkeypatch.setattr(pixel_decoding, "simpleitk_decode_hu", lambda path: None)
    with pytest.raises(MissingDecoderError, match="JPEG 2000.*pip install pylibjpeg-openjpeg"):
        load_sample_ct("head")


def test_series_summary_describes_the_series(tmp_path: Path) -> None:
    write_series(tmp_path, 3, series_number=7, description="Abdomen", study_uid=generate_uid())
    info = discover_series(tmp_path)[0]
    assert (info.matrix, info.pixel_spacing_mm, info.slice_spacing_mm) == ((24, 20), (0.8, 0.7), 2.5)
    assert info.transfer_syntax == "Explicit VR Little Endian"
    assert "#7 'Abdomen' CT axial: 3 x 24x20" in info.summary()


def test_non_ct_and_non_image_dicom_files_beside_a_ct_series(tmp_path: Path) -> None:
    from resample_med.io.sample import pydicom_test_file

    _, expected, uid = write_series(tmp_path / "ct", 3)
    (tmp_path / "other").mkdir()
    for name in ("MR_small.dcm", "rtplan.dcm"):  # a real MR image and a real RT plan (no pixels)
        (tmp_path / "other" / name).write_bytes(pydicom_test_file(name).read_bytes())
    infos = discover_series(tmp_path)
    assert sorted(s.modality for s in infos) == ["CT", "MR"]  # the RT plan is skipped: not an image
    with warnings.catch_warnings():
        warnings.simplefilter("error", DicomInputWarning)
        vol = load_volume(tmp_path)
    assert vol.source["SeriesInstanceUID"] == uid
    np.testing.assert_allclose(vol.hu, expected)
    mr = next(s for s in infos if s.modality == "MR")
    with pytest.raises(DicomInputError, match="modality 'MR'"):
        select_series(infos, mr.uid)
