"""Derived DICOM series, NIfTI and PNG output: round trips, references, output-path safety."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from io_synthetic import write_series

from resample_med.io import (
    HU_WINDOWS,
    DicomInputWarning,
    OutputPathError,
    dicom_writer,
    load_nifti,
    load_volume,
    rescale_for_int16,
    to_display,
    write_derived_series,
    write_nifti,
    write_png_preview,
)


@pytest.fixture()
def source(tmp_path: Path):  # type: ignore[no-untyped-def]
    folder = tmp_path / "input"
    write_series(folder, 5, rows=24, cols=20, orientation=(1.0, 0.0, 0.0, 0.0, 0.94, -0.342))
    return load_volume(folder)


def _reconstruction(volume):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    return (volume.hu + rng.normal(0, 30, volume.hu.shape)).astype(np.float32)


def test_round_trip_with_pydicom_and_simpleitk(tmp_path: Path, source) -> None:  # type: ignore[no-untyped-def]
    import SimpleITK as sitk

    hu = _reconstruction(source)
    out = write_derived_series(source, hu, tmp_path / "out", "resample", "30 views")
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 5
    datasets = [pydicom.dcmread(f) for f in files]
    uids = {ds.SOPInstanceUID for ds in datasets} | {ds.SeriesInstanceUID for ds in datasets}
    assert len(uids) == 6 and source.source["SeriesInstanceUID"] not in uids
    for k, ds in enumerate(datasets):
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert ds.SeriesDescription == "resample 30 views"
        assert ds.StudyInstanceUID == source.source["StudyInstanceUID"]
        assert ds.FrameOfReferenceUID == source.source["FrameOfReferenceUID"]
        assert ds.PatientID == "SYN001" and ds.Modality == "CT"
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], source.slice_positions()[k], atol=1e-6)
        np.testing.assert_allclose(
            [float(v) for v in ds.ImageOrientationPatient], source.source["ImageOrientationPatient"], atol=1e-9
        )
        assert [float(v) for v in ds.PixelSpacing] == [0.8, 0.7]
        ref = ds.ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == source.source["SeriesInstanceUID"]
        assert [r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence] == source.source["SOPInstanceUIDs"]
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.source["SOPInstanceUIDs"][k]
        stored_hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.abs(stored_hu - hu[k]).max() <= 0.5 + 1e-4
    back = load_volume(out)
    assert np.abs(back.hu - hu).max() <= 0.5 + 1e-4
    np.testing.assert_allclose(back.slice_positions(), source.slice_positions(), atol=1e-6)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(out)))
    image = reader.Execute()
    assert np.abs(sitk.GetArrayFromImage(image) - hu).max() <= 0.5 + 1e-4
    np.testing.assert_allclose(image.GetOrigin(), source.origin_mm, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing()[:2], (0.7, 0.8))
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)).T, source.direction, atol=1e-6)


def test_wide_hu_range_uses_a_finer_or_coarser_slope(tmp_path: Path, source) -> None:  # type: ignore[no-untyped-def]
    hu = np.linspace(-50000, 60000, source.hu.size, dtype=np.float32).reshape(source.hu.shape)
    slope, intercept = rescale_for_int16(hu)
    assert slope > 1 and intercept + slope * dicom_writer.INT16_MIN == pytest.approx(-50000)  # int16 spans the range
    with pytest.warns(DicomInputWarning, match="exceed int16 pixels; stored with RescaleSlope"):
        out = write_derived_series(source, hu, tmp_path / "wide", "fbp", "test")
    datasets = [pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))]  # load_volume refuses such HU as not CT
    stored = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets])
    assert np.abs(stored - hu).max() <= slope / 2 + 1e-2 * slope
    assert rescale_for_int16(np.array([-1024.0, 3071.0])) == (1.0, 0.0)


def test_output_path_safety(tmp_path: Path, source) -> None:  # type: ignore[no-untyped-def]
    hu = source.hu
    with pytest.raises(OutputPathError, match="input folder"):
        write_derived_series(source, hu, tmp_path / "input" / "derived", "fbp", "x")
    with pytest.raises(OutputPathError, match="input folder"):
        write_derived_series(source, hu, tmp_path, "fbp", "x", overwrite=True)  # would replace the input's parent
    out = write_derived_series(source, hu, tmp_path / "out", "fbp", "x")
    with pytest.raises(OutputPathError, match="already exists"):
        write_derived_series(source, hu, out, "fbp", "x")
    first = {p.name: pydicom.dcmread(p).SeriesInstanceUID for p in out.iterdir()}
    write_derived_series(source, hu, out, "fbp", "x", overwrite=True)
    second = {p.name: pydicom.dcmread(p).SeriesInstanceUID for p in out.iterdir()}
    assert first.keys() == second.keys() and set(first.values()).isdisjoint(second.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input", "out"]  # no temporary folders left
    with pytest.raises(OutputPathError, match="input folder"):
        write_nifti(source, tmp_path / "input" / "x.nii.gz")
    with pytest.raises(OutputPathError, match="input folder"):
        write_png_preview(source, tmp_path / "input" / "x.png")


def test_failed_write_leaves_nothing(tmp_path: Path, source, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    calls = []

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(*args, **kwargs)

    original = pydicom.Dataset.save_as
    monkeypatch.setattr(pydicom.Dataset, "save_as", failing)
    with pytest.raises(OSError, match="disk full"):
        write_derived_series(source, source.hu, tmp_path / "out", "fbp", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input"]


def test_missing_source_uids_get_new_ones_with_warnings(tmp_path: Path) -> None:
    write_series(tmp_path / "in", 3, series_uid="", study_uid="", frame_uid="")
    volume = load_volume(tmp_path / "in")
    with pytest.warns(DicomInputWarning) as record:
        out = write_derived_series(volume, volume.hu, tmp_path / "out", "tv", "60 views")
    text = " ".join(str(w.message) for w in record)
    assert "no StudyInstanceUID" in text and "no FrameOfReferenceUID" in text and "no ReferencedSeriesSequence" in text
    datasets = [pydicom.dcmread(p) for p in sorted(out.iterdir())]
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1 and datasets[0].StudyInstanceUID
    assert "ReferencedSeriesSequence" not in datasets[0]


def test_nifti_round_trip_keeps_the_affine(tmp_path: Path, source) -> None:  # type: ignore[no-untyped-def]
    import nibabel as nib

    hu = _reconstruction(source)
    path = write_nifti(source, tmp_path / "vol.nii.gz", hu)
    back = load_nifti(path)
    np.testing.assert_allclose(back.hu, hu, atol=1e-4)
    np.testing.assert_allclose(back.affine_lps(), source.affine_lps(), atol=1e-4)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ source.affine_lps()  # nibabel: RAS, axes (x, y, z)
    np.testing.assert_allclose(nib.load(path).affine, ras, atol=1e-4)
    with pytest.raises(OutputPathError, match="already exists"):
        write_nifti(source, path)
    with pytest.raises(OutputPathError, match="name ending in .nii"):
        write_nifti(source, tmp_path / "vol.nrrd")
    assert load_volume(path).shape == source.shape


def test_nifti_flipped_axes_are_canonicalised(tmp_path: Path) -> None:
    import nibabel as nib

    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(6, 5, 4)  # (x, y, z) for nibabel
    affine = np.diag([2.0, 3.0, 4.0, 1.0])  # RAS+: x to the right -> LPS x flipped
    affine[:3, 3] = [10.0, 20.0, 30.0]
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "ras.nii")
    vol = load_nifti(tmp_path / "ras.nii")
    np.testing.assert_allclose(vol.direction, np.eye(3), atol=1e-9)
    assert vol.spacing_mm == pytest.approx((4.0, 3.0, 2.0))
    # voxel (x=0, y=0, z=0) of the file lies at RAS (10, 20, 30) = LPS (-10, -20, 30)
    k, j, i = 0, vol.shape[1] - 1, vol.shape[2] - 1
    position = vol.origin_mm + i * 2.0 * vol.direction[0] + j * 3.0 * vol.direction[1] + k * 4.0 * vol.direction[2]
    np.testing.assert_allclose(position, [-10.0, -20.0, 30.0])
    assert vol.hu[k, j, i] == data[0, 0, 0]


def test_png_preview_windows(tmp_path: Path, source) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    assert (HU_WINDOWS["lung"].lower, HU_WINDOWS["lung"].upper) == (-1350.0, 150.0)
    assert (HU_WINDOWS["model"].lower, HU_WINDOWS["model"].upper) == (-1000.0, 1000.0)
    np.testing.assert_array_equal(to_display(np.array([-160.0, 40.0, 240.0]), "soft_tissue"), [0, 128, 255])
    path = write_png_preview(source, tmp_path / "p.png", "bone", index=1)
    image = np.asarray(Image.open(path))
    assert image.shape == (24, 20) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, to_display(source.hu[1], (400, 1800)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_png_preview(source.hu[0], tmp_path / "q.png", (0, 100))
    with pytest.raises(KeyError, match="unknown HU window"):
        to_display(source.hu, "brain")
    assert dicom_writer.DEFAULT_DISPLAY_WINDOW in HU_WINDOWS
