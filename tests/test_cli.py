"""The ``resample-med`` command line, end to end on synthetic DICOM series written here with pydicom."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import yaml
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from resample_med.cli import main
from resample_med.models import create_bundle
from resample_med.pipeline import slices as slices_module

N_SLICES = 4
MATRIX = 40
PIXEL_SPACING = (0.8, 0.75)
SLICE_GAP = 2.5
ORIGIN = (-15.0, -14.0, 60.0)
RESCALE_INTERCEPT = -1024.0
FAST = ["--views", "8", "--batch-size", "2", "--device", "cpu"]
"""Options that keep every CLI run in these tests to a second or two."""


def write_series(folder: Path, modality: str = "CT", n: int = N_SLICES, seed: int = 0) -> Path:
    """A small axial series in ``folder``: a water ellipse with a bone insert, InstanceNumbers scrambled."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[:MATRIX, :MATRIX]
    order = rng.permutation(n)
    for k in range(n):
        hu = np.full((MATRIX, MATRIX), -1000.0)
        hu[((yy - 20) / 14) ** 2 + ((xx - 19) / 12) ** 2 <= 1] = 30.0
        hu[(yy - 14 - k) ** 2 + (xx - 22) ** 2 <= 9] = 1000.0
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = modality
        ds.PatientName, ds.PatientID = "TEST^PHANTOM", "PHANTOM1"
        ds.SeriesNumber, ds.SeriesDescription = 3, f"synthetic {modality}"
        ds.InstanceNumber = int(order[k]) + 1
        ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + k * SLICE_GAP]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = list(PIXEL_SPACING)
        ds.SliceThickness = SLICE_GAP
        ds.Rows = ds.Columns = MATRIX
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, RESCALE_INTERCEPT
        ds.PixelData = (hu - RESCALE_INTERCEPT).astype("<i2").tobytes()
        ds.save_as(folder / f"slice_{order[k]:03d}.dcm", enforce_file_format=True)
    return folder


def read_sitk(folder: Path) -> sitk.Image:
    """A DICOM series folder through SimpleITK's own reader (sorted by position)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def short_resample_config(folder: Path) -> Path:
    """A config file that keeps ReSample's latent fits to a couple of iterations (nested overrides)."""
    path = folder / "short.yaml"
    path.write_text(yaml.safe_dump({"sampler": {"final_max_iter": 2, "latent": {"max_iter": 2}}}))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A saved untrained tiny bundle (32x32 images) for ``--model``."""
    return str(create_bundle("tiny", seed=0).save(tmp_path_factory.mktemp("tiny_model")))


class SamplerSpy:
    """Wraps the sampler entry point: records the slices of each call, Ctrl-C's call ``interrupt_at``."""

    def __init__(self, real) -> None:
        self.real = real
        self.calls: list[int] = []
        self.interrupt_at = 0

    def __call__(self, method, y, *args, **kwargs):
        self.calls.append(int(y.shape[0]))
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        return self.real(method, y, *args, **kwargs)


@pytest.fixture()
def spy(monkeypatch) -> SamplerSpy:
    """The sampler of :mod:`resample_med.pipeline.slices`, spied on."""
    spy = SamplerSpy(slices_module.reconstruct)
    monkeypatch.setattr(slices_module, "reconstruct", spy)
    return spy


def test_reconstruct_writes_a_derived_series_with_the_source_geometry(tmp_path, tiny_model):
    source = write_series(tmp_path / "study")
    out = tmp_path / "out"
    rc = main(
        [
            "reconstruct",
            str(source),
            str(out),
            "--model",
            tiny_model,
            "--method",
            "resample",
            "--preset",
            "fast",
            "--config",
            str(short_resample_config(tmp_path)),
            "--steps",
            "2",
            "--sigma2",
            "20",
            "--nifti",
            "--png",
            *FAST,
        ]
    )
    assert rc == 0
    files = sorted((out / "dicom").glob("*.dcm"))
    assert len(files) == N_SLICES
    src_ds, out_ds = pydicom.dcmread(next(source.iterdir())), pydicom.dcmread(files[0])
    assert out_ds.SeriesInstanceUID != src_ds.SeriesInstanceUID
    assert out_ds.FrameOfReferenceUID == src_ds.FrameOfReferenceUID
    assert "DERIVED" in out_ds.ImageType
    assert_same_geometry(read_sitk(out / "dicom"), read_sitk(source))
    assert sitk.ReadImage(str(out / "reconstruction.nii.gz")).GetSize() == (MATRIX, MATRIX, N_SLICES)
    assert (out / "preview.png").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "resample" and report["sampler_config"]["num_steps"] == 2
    assert report["sampler_config"]["gamma"] == 20 and report["sampler_config"]["latent"]["max_iter"] == 2
    assert len(report["per_slice"]) == N_SLICES
    assert all(np.isfinite(r["residual"]) and "psnr" in r for r in report["per_slice"])
    assert report["timings"]["seconds_per_slice"] > 0 and "torch" in report["versions"]
    assert not (out / ".partial").exists()


def test_interrupt_keeps_finished_slices_and_rerun_resumes(tmp_path, spy, capsys):
    source = write_series(tmp_path / "study")
    out = tmp_path / "out"
    args = ["reconstruct", str(source), str(out), "--method", "fbp", *FAST]
    spy.interrupt_at = 2
    assert main(args) == 130
    assert "resume" in capsys.readouterr().err
    assert len(list((out / ".partial").glob("slice_*.npz"))) == 2
    assert not (out / "report.json").exists()

    spy.interrupt_at = 0
    spy.calls.clear()
    assert main(args) == 0
    assert sum(spy.calls) == N_SLICES - 2
    report = json.loads((out / "report.json").read_text())
    assert [r["resumed"] for r in report["per_slice"]] == [True, True, False, False]

    spy.calls.clear()
    assert main(args) == 0  # finished: nothing recomputed
    assert spy.calls == [] and "already reconstructed" in capsys.readouterr().out
    assert main([*args, "--overwrite"]) == 0
    assert sum(spy.calls) == N_SLICES
    assert not any(r["resumed"] for r in json.loads((out / "report.json").read_text())["per_slice"])


def test_changed_settings_do_not_resume_silently(tmp_path, spy, capsys):
    source = write_series(tmp_path / "study")
    out = tmp_path / "out"
    spy.interrupt_at = 2
    assert main(["reconstruct", str(source), str(out), "--method", "fbp", *FAST]) == 130
    spy.interrupt_at = 0
    assert main(["reconstruct", str(source), str(out), "--method", "fbp", *FAST, "--views", "9"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "empty", "mr"])
def test_bad_input_exits_2_naming_the_path(tmp_path, capsys, case):
    if case == "missing":
        source = tmp_path / "nowhere"
    elif case == "empty":
        source = tmp_path / "empty"
        source.mkdir()
    else:
        source = write_series(tmp_path / "mr_study", modality="MR")
    assert main(["reconstruct", str(source), str(tmp_path / "out"), "--method", "fbp", *FAST]) == 2
    err = capsys.readouterr().err
    assert str(source) in err
    assert {"missing": "does not exist", "empty": "empty", "mr": "MR"}[case] in err


def test_output_inside_the_input_folder_is_refused(tmp_path, capsys):
    source = write_series(tmp_path / "study")
    before = sorted(p.name for p in source.iterdir())
    assert main(["reconstruct", str(source), str(source / "out"), "--method", "fbp", *FAST]) == 2
    assert "input folder" in capsys.readouterr().err
    assert sorted(p.name for p in source.iterdir()) == before


def test_folder_of_studies_goes_on_after_a_bad_study(tmp_path, capsys):
    studies = tmp_path / "studies"
    write_series(studies / "a_good")
    write_series(studies / "b_mr", modality="MR")
    write_series(studies / "c_good", seed=1)
    out = tmp_path / "out"
    assert main(["reconstruct", str(studies), str(out), "--method", "fbp", *FAST]) == 1
    assert (out / "a_good" / "report.json").is_file() and (out / "c_good" / "report.json").is_file()
    summary = {row["series"]: row for row in json.loads((out / "summary.json").read_text())}
    assert summary["b_mr"]["status"] == "failed" and "MR" in summary["b_mr"]["error"]
    assert "b_mr" in capsys.readouterr().err


def test_config_file_then_options_resolved_and_saved(tmp_path):
    source = write_series(tmp_path / "study")
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "acquisition": {"n_views": 12, "photons": "5e4"},
                "reconstruction": {"method": "tv", "seed": 7},
                "sampler": {"max_iter": 5},
                "output": {"png": True},
            }
        )
    )
    out = tmp_path / "out"
    assert (
        main(["reconstruct", str(source), str(out), "--config", str(config), "--views", "10", "--device", "cpu"]) == 0
    )
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["acquisition"]["n_views"] == 10 and saved["acquisition"]["photons"] == 5e4
    assert saved["reconstruction"]["method"] == "tv" and saved["reconstruction"]["seed"] == 7
    assert saved["sampler"]["max_iter"] == 5 and saved["reconstruction"]["preset"] == "fast"
    assert (out / "preview.png").is_file()
    # the saved configuration reproduces the run
    again = tmp_path / "again"
    assert main(["reconstruct", str(source), str(again), "--config", str(out / "config.yaml")]) == 0
    first = json.loads((out / "report.json").read_text())["per_slice"]
    second = json.loads((again / "report.json").read_text())["per_slice"]
    assert [r["residual"] for r in first] == pytest.approx([r["residual"] for r in second])


def test_slice_range_gives_a_series_of_the_kept_slices(tmp_path):
    source = write_series(tmp_path / "study")
    out = tmp_path / "out"
    assert main(["reconstruct", str(source), str(out), "--method", "fbp", "--slices", "1:3", *FAST]) == 0
    written = read_sitk(out / "dicom")
    full = read_sitk(source)
    assert written.GetSize() == (MATRIX, MATRIX, 2)
    np.testing.assert_allclose(written.GetOrigin(), full.TransformIndexToPhysicalPoint((0, 0, 1)), atol=1e-4)
    np.testing.assert_allclose(written.GetSpacing(), full.GetSpacing(), atol=1e-4)


def test_bad_config_file_is_named(tmp_path, capsys):
    source = write_series(tmp_path / "study")
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"acquisition": {"n_viewz": 3}}))
    assert main(["reconstruct", str(source), str(tmp_path / "out"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "n_viewz" in err


@pytest.mark.filterwarnings("ignore:.*the source has no:resample_med.io.DicomInputWarning")
def test_simulate_then_reconstruct_the_sinogram_file(tmp_path):
    source = write_series(tmp_path / "study")
    (tmp_path / "measured").mkdir()
    sinogram = tmp_path / "measured" / "sino.npz"
    assert main(["simulate", str(source), str(sinogram), "--size", "32", "--views", "16", "--slices", "1:3"]) == 0
    out = tmp_path / "out"
    assert main(["reconstruct", str(sinogram), str(out), "--method", "cgls", "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["per_slice"]) == 2 and report["acquisition"]["n_views"] == 16
    assert report["mean"]["psnr"] > 10
    assert sitk.ReadImage(str(out / "reconstruction.nii.gz")).GetSize() == (32, 32, 2)


def test_demo_runs_offline_with_a_given_model(tmp_path, tiny_model, capsys):
    out = tmp_path / "demo"
    assert (
        main(["demo", "--model", tiny_model, "--out", str(out), "--preset", "fast", "--steps", "2", "--device", "cpu"])
        == 0
    )
    printed = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in printed.splitlines() if line.split()}
    for method in ("fbp", "resample"):
        psnr, ssim, seconds = map(float, lines[method][1:4])
        assert psnr > 0 and -1 <= ssim <= 1 and seconds >= 0
    from PIL import Image

    with Image.open(out / "demo.png") as png:
        assert png.size[0] == 4 * 32
    assert json.loads((out / "demo.json").read_text())["results"]["resample"]["psnr"] == pytest.approx(
        float(lines["resample"][1]), abs=0.01
    )


@pytest.mark.slow
@pytest.mark.shared
def test_shared_dicom_series_reconstruct_with_fbp(shared_dir, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "reconstruct",
                str(shared_dir / "dicom"),
                str(out),
                "--method",
                "fbp",
                "--preset",
                "fast",
                "--device",
                "cpu",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    studies = sorted(p.name for p in (shared_dir / "dicom").iterdir() if p.is_dir())
    for study in studies:
        report = json.loads((out / study / "report.json").read_text())
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(report["input"]["files"])  # the source series, sorted along the slice normal
        assert_same_geometry(read_sitk(out / study / "dicom"), reader.Execute())
        assert report["mean"]["psnr"] > 15


def test_evaluate_hands_its_arguments_to_the_harness(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--help"])
    assert exit_info.value.code == 0 and "--methods" in capsys.readouterr().out


def test_unknown_options_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--no-such-option"])
    assert exit_info.value.code == 2 and "--no-such-option" in capsys.readouterr().err
