"""What ``resample-med reconstruct`` tells and writes: progress, closing metrics, --json, --quiet,
--threads, derived series that say how they were made, the std map series, windowed contact sheets,
and the projector cache commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from test_cli import FAST, MATRIX, N_SLICES, short_resample_config, write_series

from resample_med.cli import main
from resample_med.cli import reconstruct as reconstruct_cli
from resample_med.io.preview import contact_sheet_indices, write_contact_sheet
from resample_med.models import create_bundle
from resample_med.pipeline import slices as slices_module
from resample_med.sampling import ProgressEvent
from resample_med.sampling.baselines import tv


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A saved untrained tiny bundle (32x32 images) for ``--model``."""
    return str(create_bundle("tiny", seed=0).save(tmp_path_factory.mktemp("tiny_model")))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return write_series(tmp_path_factory.mktemp("input") / "study")


def test_closing_metrics_line_and_a_derived_series_that_says_how_it_was_made(study, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reconstruct", str(study), str(out), "--method", "fbp", *FAST]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = lines[-1]
    assert "4 slice(s)" in last and "PSNR" in last and "SSIM" in last and "HU-RMSE" in last, lines
    report = json.loads((out / "report.json").read_text())
    assert "256x256 model grid" in report["derivation"] and "interpolated" in report["derivation"]
    assert f"{MATRIX}x{MATRIX} source grid" in report["derivation"]
    ds = pydicom.dcmread(next((out / "dicom").glob("*.dcm")))
    assert ds.SeriesDescription == "fbp parallel 8 views 1e+05 ph"
    assert ds.SeriesDescription.count("fbp") == 1
    assert "256x256 model grid" in ds.ImageComments and "interpolated" in ds.ImageComments
    assert "interpolated" in ds.DerivationDescription and "parallel-beam scan, 8 views" in ds.DerivationDescription


def test_json_summary_on_stdout_and_quiet_prints_nothing(study, tmp_path, capsys):
    assert main(["reconstruct", str(study), str(tmp_path / "a"), "--method", "fbp", "--json", *FAST]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    (series,) = summary["series"]
    assert summary["exit_code"] == 0 and series["status"] == "done"
    assert series["mean"]["psnr"] > 0 and series["timings"]["slices"] == N_SLICES
    assert "PSNR" in captured.err  # the human messages moved to stderr
    assert main(["reconstruct", str(study), str(tmp_path / "b"), "--method", "fbp", "--quiet", *FAST]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert (tmp_path / "b" / "report.json").is_file()
    assert main(["reconstruct", str(tmp_path / "missing"), str(tmp_path / "c"), "--quiet", *FAST]) == 2
    assert "missing" in capsys.readouterr().err  # errors still show


def test_threads_option_sets_torch_threads(study, tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        assert main(["reconstruct", str(study), str(tmp_path / "out"), "--method", "fbp", "--threads", "1", *FAST]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert main(["reconstruct", str(study), str(tmp_path / "x"), "--threads", "0", *FAST]) == 2
    assert "--threads 0" in capsys.readouterr().err


def test_slice_bar_knows_its_total_first_and_steps_advance_it(study, tmp_path, monkeypatch):
    seen: list[tuple[str, float, float | None]] = []
    real_start, real_step = reconstruct_cli.SliceBar.start, reconstruct_cli.SliceBar.on_step

    def start(self, total):
        real_start(self, total)
        seen.append(("start", self.bar.n, self.bar.total))

    def on_step(self, event):
        real_step(self, event)
        seen.append(("step", self.bar.n, self.bar.total))

    real_reconstruct = slices_module.reconstruct

    def sampler(*args, **kwargs):
        seen.append(("batch", 0.0, None))
        return real_reconstruct(*args, **kwargs)

    monkeypatch.setattr(reconstruct_cli.SliceBar, "start", start)
    monkeypatch.setattr(reconstruct_cli.SliceBar, "on_step", on_step)
    monkeypatch.setattr(slices_module, "reconstruct", sampler)
    assert main(["reconstruct", str(study), str(tmp_path / "out"), "--method", "tv", "--steps", "20", *FAST]) == 0
    assert seen[0] == ("start", 0, N_SLICES) and seen[1][0] == "batch"
    first_batch = [n for kind, n, _ in seen[2:] if kind == "step"][:2]
    assert 0 < first_batch[0] < first_batch[1] <= 2  # batch of 2 slices, advancing by steps
    assert any(kind == "step" and 2 < n < N_SLICES for kind, n, _ in seen)


def test_slice_bar_fractions():
    bar = reconstruct_cli.SliceBar("t", batch_size=4, disable=True)
    bar.start(10)
    assert bar.bar.total == 10 and bar.bar.n == 0
    bar.on_step(ProgressEvent("sampling", 5, 20))
    assert bar.bar.n == pytest.approx(1.0)  # a quarter of a batch of 4
    bar.on_step(ProgressEvent("sampling", 20, 20))
    bar.on_slices(1, 10)  # the batch's slices are then placed one by one: the bar does not go back
    assert bar.bar.n == pytest.approx(4.0)
    bar.on_slices(8, 10)
    bar.on_step(ProgressEvent("sampling", 10, 20))
    assert bar.bar.n == pytest.approx(9.0)  # the last batch holds 2 slices


def test_tv_reports_more_often_than_every_50_iterations():
    assert tv.TVConfig().report_every <= 10
    assert all(config.report_every <= 10 for config in tv.PRESETS.values())


def test_std_map_is_its_own_derived_series_with_nifti_and_png(study, tmp_path, tiny_model):
    out = tmp_path / "out"
    assert (
        main(
            [
                "reconstruct",
                str(study),
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
                "--n-samples",
                "2",
                "--nifti",
                "--png",
                "--window",
                "lung",
                "--slices",
                "0:2",
                *FAST,
            ]
        )
        == 0
    )
    rec = pydicom.dcmread(next((out / "dicom").glob("*.dcm")))
    std_files = sorted((out / "std_dicom").glob("*.dcm"))
    assert len(std_files) == 2
    std = pydicom.dcmread(std_files[0])
    assert std.SeriesInstanceUID != rec.SeriesInstanceUID and std.SeriesNumber == rec.SeriesNumber + 1
    assert std.StudyInstanceUID == rec.StudyInstanceUID and std.FrameOfReferenceUID == rec.FrameOfReferenceUID
    assert std.SeriesDescription.startswith("resample std") and "standard deviation" in std.ImageComments
    assert (float(std.WindowCenter), float(std.WindowWidth)) == (50.0, 100.0)
    assert std.pixel_array.min() >= 0 and std.pixel_array.max() > 0
    for name in ("std.nii.gz", "reconstruction.nii.gz", "preview.png", "std.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert str(out / "std_dicom") in report["outputs"]


def test_contact_sheet_tiles_evenly_spaced_labelled_slices_in_the_window(tmp_path):
    assert contact_sheet_indices(3) == [0, 1, 2]
    assert contact_sheet_indices(100, 9) == [0, 12, 25, 37, 50, 62, 74, 87, 99]
    hu = np.stack([np.full((20, 30), v, dtype=np.float32) for v in (-1000.0, -600.0, 40.0, 1000.0, 3000.0)])
    sheets = {}
    for window in ("soft-tissue", "lung", "bone", "full"):
        with Image.open(write_contact_sheet(hu, tmp_path / f"{window}.png", window)) as png:
            sheets[window] = np.asarray(png)
    sheet = sheets["lung"]
    assert sheet.shape == (2 * (20 + 12), 3 * 30)  # 5 tiles on a 2 x 3 grid, each under a label band
    tile = sheet[12:32, 30:60]  # second tile: -600 HU, the lung window's centre
    assert np.all(tile == 128)
    assert not np.array_equal(sheets["soft-tissue"], sheets["bone"])
    full = sheets["full"]
    assert full[12 + 5, 5] == 0 and full[32 + 12 + 5, 30 + 5] == 255  # -1000 black, 3000 white in full
    with pytest.raises(KeyError, match="unknown HU window"):
        write_contact_sheet(hu, tmp_path / "x.png", "brain")


def test_cache_info_and_clear(private_operator_cache, capsys, monkeypatch):
    from resample_med.geometry import ParallelBeamGeometry
    from resample_med.operators import cache, make_projector

    for views in (4, 6):
        make_projector(ParallelBeamGeometry.sparse_view(views, image_size=16))
    assert main(["cache", "info"]) == 0
    text = capsys.readouterr().out
    assert str(private_operator_cache) in text and "2 file(s)" in text
    assert main(["cache", "clear"]) == 0
    assert "deleted 2 file(s)" in capsys.readouterr().out
    assert list(private_operator_cache.glob("*.pt")) == []
    monkeypatch.setenv(cache.CACHE_LIMIT_ENV_VAR, "lots")
    assert main(["cache", "info"]) == 2
    assert "RESAMPLE_MED_CACHE_LIMIT_GB='lots'" in capsys.readouterr().err


def test_cache_evicts_least_recently_used_files_over_the_cap(private_operator_cache, monkeypatch):
    import os

    from resample_med.geometry import ParallelBeamGeometry
    from resample_med.operators import cache, clear_memory_cache, make_projector

    geometries = [ParallelBeamGeometry.sparse_view(v, image_size=16) for v in (7, 5, 3)]  # third file smallest
    make_projector(geometries[0])
    make_projector(geometries[1])
    first, second = (cache.cache_path(g) for g in geometries[:2])
    os.utime(first, (1_000, 1_000))
    os.utime(second, (2_000, 2_000))
    clear_memory_cache()
    make_projector(geometries[0])  # a disk hit: now the most recently used
    assert first.stat().st_mtime > second.stat().st_mtime
    limit = first.stat().st_size + second.stat().st_size  # the two fit, a third does not
    monkeypatch.setenv(cache.CACHE_LIMIT_ENV_VAR, str(limit / 1e9))
    make_projector(geometries[2])  # over the cap: the least recently used file (second) goes
    assert first.is_file() and not second.is_file() and cache.cache_path(geometries[2]).is_file()
    assert cache.cache_info().total_bytes <= limit
