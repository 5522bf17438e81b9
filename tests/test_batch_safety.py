"""Batch safety of ``resample-med reconstruct`` (issue 17): hostile tags, corrupt and non-finite inputs,
kills, concurrent runs. Every crafted input is built here from synthetic series (nothing committed).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from io_synthetic import write_series
from test_cli import SamplerSpy, short_resample_config

from resample_med.cli import main
from resample_med.io import DicomInputError, discover_series, load_volume, write_derived_series, write_nifti
from resample_med.io.errors import NonFiniteError
from resample_med.io.output_paths import OutputLock, safe_component
from resample_med.models import LatentDiffusionBundle, create_bundle, weights_digest
from resample_med.pipeline import slices as slices_module

REPO_ROOT = Path(__file__).resolve().parents[1]
FAST = ["--method", "fbp", "--views", "8", "--batch-size", "2", "--device", "cpu"]
"""FBP with few views: every run here takes about a second."""


def reconstruct(*args: object) -> int:
    """``resample-med reconstruct ARGS...`` in-process; the exit code."""
    return main(["reconstruct", *(str(a) for a in args)])


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> content), to prove nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_nifti_hu(path: Path, hu: np.ndarray) -> Path:
    """(Z, Y, X) HU as a NIfTI file with 1 mm voxels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.asarray(hu, dtype=np.float32)), str(path))
    return path


def phantom_hu(n: int = 4, size: int = 32) -> np.ndarray:
    """(n, size, size) HU: air around a water disc."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    return np.repeat(np.where(disc, 40.0, -1000.0)[None], n, axis=0).astype(np.float32)


@pytest.fixture()
def spy(monkeypatch) -> SamplerSpy:
    """The sampler of :mod:`resample_med.pipeline.slices`, spied on."""
    spy = SamplerSpy(slices_module.reconstruct)
    monkeypatch.setattr(slices_module, "reconstruct", spy)
    return spy


# --- 1. every folder name derived from a tag is one safe component inside OUT -------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "..",
        ".",
        "",
        "/",
        "//////////..",
        "a/../..",
        "..\\..",
        "C:",
        "x\x00y\n",
        "CON",
        ".partial",
        "nul.txt",
        "é" * 300,
    ],
)
def test_safe_component_is_one_harmless_name(tmp_path, name):
    safe = safe_component(name)
    assert safe not in ("", ".", "..") and not safe.startswith(".")
    assert "/" not in safe and "\\" not in safe and ":" not in safe and safe.isprintable()
    assert safe.split(".")[0].upper() not in ("CON", "NUL") and len(safe) <= 100
    assert (tmp_path / safe).resolve().parent == tmp_path.resolve()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hostile_series_uid_cannot_escape_the_output_folder(tmp_path):
    study = tmp_path / "study"
    for prefix, uid in (("a", "1.2.3.4//////////.."), ("b", "1.2.3.5"), ("c", "1.2.3.6/..")):
        write_series(study, 3, rows=32, cols=32, prefix=prefix, series_number=None, description="", series_uid=uid)
    parent = tmp_path / "parent"
    (parent / "dicom").mkdir(parents=True)
    (parent / "dicom" / "mine.dcm").write_bytes(b"user data")
    (parent / "report.json").write_text("{}")
    (parent / "notes.txt").write_text("keep me")
    before = tree(parent)
    out = parent / "out"
    assert reconstruct(study, out, "--all-series", "--overwrite", *FAST) == 0
    after = {k: v for k, v in tree(parent).items() if not k.startswith("out/")}
    assert after == before
    jobs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(jobs) == 3 and all((out / j / "report.json").is_file() for j in jobs)


# --- 2. non-finite and absurd input is an error, non-finite output is never written ------------------------


@pytest.mark.parametrize(
    ("case", "count", "first"),
    [
        ("nan_slice", 32 * 32, 2),
        ("one_nan", 1, 1),
        ("plus_inf", 1, 3),
        ("minus_inf", 1, 0),
        ("all_nan", 4 * 32 * 32, 0),
    ],
)
def test_non_finite_nifti_is_refused_naming_file_count_and_slice(tmp_path, capsys, case, count, first):
    hu = phantom_hu()
    if case == "nan_slice":
        hu[2] = np.nan
    elif case == "one_nan":
        hu[1, 5, 7] = np.nan
    elif case == "plus_inf":
        hu[3, 0, 0] = np.inf
    elif case == "minus_inf":
        hu[0, 9, 9] = -np.inf
    else:
        hu[:] = np.nan
    path = write_nifti_hu(tmp_path / "in" / "ct.nii.gz", hu)
    out = tmp_path / "out"
    assert reconstruct(path, out, *FAST) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"{count} non-finite voxel(s)" in err and f"first in slice {first}" in err
    assert "--fill-nonfinite" in err
    assert not out.exists()


def test_fill_nonfinite_is_explicit_and_reported(tmp_path):
    hu = phantom_hu()
    hu[1, 5, 7] = np.nan
    path = write_nifti_hu(tmp_path / "in" / "ct.nii.gz", hu)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="filled 1 non-finite voxel"):
        assert reconstruct(path, out, "--fill-nonfinite", "-1000", "--nifti", *FAST) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["nonfinite_filled"] == {"count": 1, "value_hu": -1000.0}
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "reconstruction.nii.gz")))).all()


@pytest.mark.parametrize(("case", "match"), [("huge", "outside the plausible CT range"), ("tiny", "1 x 1 pixels")])
def test_absurd_nifti_is_refused_with_the_reason(tmp_path, capsys, case, match):
    if case == "huge":
        hu = phantom_hu()
        hu[2, 3, 3] = 1e38
    else:
        hu = np.zeros((3, 1, 1), np.float32)
    path = write_nifti_hu(tmp_path / "ct.nii.gz", hu)
    assert reconstruct(path, tmp_path / "out", *FAST) == 2
    err = capsys.readouterr().err
    assert str(path) in err and match in err


def test_non_finite_reconstruction_is_never_written(tmp_path, spy, capsys, monkeypatch):
    study = tmp_path / "study"
    write_series(study, 4, rows=32, cols=32)
    real = spy.real

    def poisoned(method, y, *args, **kwargs):
        result = real(method, y, *args, **kwargs)
        if len(spy.calls) == 2:
            result.image[0, 0, 3, 3] = float("nan")
        return result

    spy.real = poisoned
    out = tmp_path / "out"
    assert reconstruct(study, out, *FAST) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and "slice 2" in err
    assert not (out / "dicom").exists() and not (out / "report.json").exists()
    assert sorted(p.name for p in (out / ".partial").glob("slice_*.npz")) == ["slice_00000.npz", "slice_00001.npz"]


def test_writers_refuse_non_finite_values(tmp_path):
    study = tmp_path / "study"
    write_series(study, 2, rows=32, cols=32)
    volume = load_volume(study)
    bad = volume.hu.copy()
    bad[1, 2, 3] = np.inf
    with pytest.raises(NonFiniteError, match="1 non-finite"):
        write_derived_series(volume, bad, tmp_path / "dicom", method="fbp", description="x")
    with pytest.raises(NonFiniteError, match="1 non-finite"):
        write_nifti(volume, tmp_path / "r.nii.gz", hu=bad)
    assert not (tmp_path / "dicom").exists() and not (tmp_path / "r.nii.gz").exists()


# --- 3. bad slices refuse the series unless --skip-bad-slices ----------------------------------------------


def _break(path: Path, how: str) -> str:
    """Damage one slice file as the issue describes; the reason the error must give."""
    if how.startswith("cut"):
        path.write_bytes(path.read_bytes()[: int(how[3:])])
        return ""
    ds = pydicom.dcmread(path)
    if how == "no_pixels":
        del ds.PixelData
        ds.save_as(path, enforce_file_format=True)
        return "no PixelData"
    if how == "size":
        ds.PixelData = ds.PixelData[:-80]
        ds.save_as(path, enforce_file_format=True)
        return ""
    if how == "dangling":
        path.unlink()
        path.symlink_to(path.with_name("gone.dcm"))
        return "cannot be read"
    path.chmod(0)
    return "cannot be read"


BREAKS = ["cut64", "cut132", "cut300", "cut1000", "cut2000", "no_pixels", "size", "dangling", "permission"]


@pytest.mark.parametrize("how", BREAKS)
def test_a_bad_slice_refuses_the_series_naming_the_file(tmp_path, capsys, how):
    if how == "permission" and os.geteuid() == 0:
        pytest.skip("root reads a file whatever its permissions; the dangling link case covers unreadable files")
    study = tmp_path / "study"
    paths, _, _ = write_series(study, 5, rows=32, cols=32)
    before = tree(study) if how != "permission" else None
    reason = _break(paths[2], how)
    out = tmp_path / "out"
    assert reconstruct(study, out, *FAST) == 2
    err = capsys.readouterr().err
    assert paths[2].name in err and reason in err and "--skip-bad-slices" in err
    assert not out.exists()
    if before is not None and how != "dangling":
        assert set(tree(study)) == set(before)


@pytest.mark.parametrize("how", ["cut64", "cut1000", "no_pixels"])
def test_skip_bad_slices_reports_each_skipped_file(tmp_path, how):
    study = tmp_path / "study"
    paths, _, _ = write_series(study, 5, rows=32, cols=32)
    _break(paths[2], how)
    _break(paths[4], "no_pixels")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="skipped 2"):
        assert reconstruct(study, out, "--skip-bad-slices", *FAST) == 0
    report = json.loads((out / "report.json").read_text())
    skipped = {Path(s["file"]).name: s["reason"] for s in report["input"]["skipped_files"]}
    assert set(skipped) == {paths[2].name, paths[4].name} and "no PixelData" in skipped[paths[4].name]
    assert report["input"]["shape_zyx"][0] == 3


# --- 4. a finished output is only trusted for the same input and settings ----------------------------------


def test_finished_output_of_another_patient_or_setting_is_refused(tmp_path, capsys):
    write_series(tmp_path / "patient_a", 3, rows=32, cols=32)
    write_series(tmp_path / "patient_b", 3, rows=32, cols=32)
    out = tmp_path / "out"
    assert reconstruct(tmp_path / "patient_a", out, *FAST) == 0
    first = (out / "report.json").read_bytes()
    capsys.readouterr()
    assert reconstruct(tmp_path / "patient_b", out, *FAST, "--views", "60") == 2
    err = capsys.readouterr().err
    assert "different" in err and "input" in err and "acquisition.n_views" in err and "--overwrite" in err
    assert (out / "report.json").read_bytes() == first
    assert reconstruct(tmp_path / "patient_a", out, *FAST) == 0
    assert "already reconstructed" in capsys.readouterr().out
    assert reconstruct(tmp_path / "patient_b", out, *FAST, "--views", "60", "--overwrite") == 0
    assert json.loads((out / "report.json").read_text())["acquisition"]["n_views"] == 60


def test_output_of_another_prior_is_refused_even_from_the_same_model_folder(tmp_path, capsys):
    """A model folder retrained in place (or a new shipped default) must not pass for the prior that
    made a finished output: the fingerprint holds the weights' digest, not only the folder's name."""
    write_series(tmp_path / "study", 2, rows=32, cols=32)
    model, out = tmp_path / "model", tmp_path / "out"
    create_bundle("tiny", seed=0).save(model)
    args = ["--model", model, "--method", "resample", "--preset", "fast", "--steps", "2"]
    args += ["--config", short_resample_config(tmp_path), "--views", "8", "--batch-size", "2", "--device", "cpu"]
    assert reconstruct(tmp_path / "study", out, *args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["weights_sha256"] == weights_digest(LatentDiffusionBundle.load(model))
    first = (out / "report.json").read_bytes()
    create_bundle("tiny", seed=1).save(model)
    capsys.readouterr()
    assert reconstruct(tmp_path / "study", out, *args) == 2
    err = capsys.readouterr().err
    assert "model_weights" in err and "--overwrite" in err
    assert (out / "report.json").read_bytes() == first


# --- 5. series selection: numbers by number, descriptions only when asked; list and dry run -----------------


@pytest.fixture()
def two_series(tmp_path) -> Path:
    study = tmp_path / "study"
    write_series(study, 4, rows=32, cols=32, prefix="a", series_number=3, description="arterial 7 mm")
    write_series(study, 3, rows=32, cols=32, prefix="b", series_number=5, description="venous", z0=40.0)
    return study


def test_series_number_never_matches_a_description(two_series, tmp_path, capsys):
    out = tmp_path / "out"
    assert reconstruct(two_series, out, "--series", "7", *FAST) == 2
    err = capsys.readouterr().err
    assert "no series with SeriesInstanceUID or SeriesNumber '7'" in err and "--series-description" in err
    assert not out.exists()
    assert reconstruct(two_series, out, "--series-description", "7 MM", *FAST) == 0
    assert json.loads((out / "report.json").read_text())["input"]["shape_zyx"][0] == 4


def test_ambiguous_description_lists_the_series(two_series, tmp_path, capsys):
    assert reconstruct(two_series, tmp_path / "out", "--series-description", "e", *FAST) == 2
    err = capsys.readouterr().err
    assert "matches 2 series" in err and "arterial 7 mm" in err and "venous" in err


def test_list_series_and_dry_run_write_nothing(two_series, tmp_path, capsys):
    before = tree(tmp_path)
    assert reconstruct(two_series, "--list-series") == 0
    listed = capsys.readouterr().out
    assert "#3 'arterial 7 mm'" in listed and "#5 'venous'" in listed and "(default)" in listed
    out = tmp_path / "out"
    assert reconstruct(two_series, out, "--dry-run", *FAST) == 0
    plan = capsys.readouterr().out
    assert "read 4 file(s)" in plan and str(out) in plan and "would reconstruct" in plan
    assert tree(tmp_path) == before and not out.exists()


# --- 6. one run per output folder -------------------------------------------------------------------------------


def test_second_run_into_a_locked_output_folder_is_refused(tmp_path, capsys):
    write_series(tmp_path / "study", 3, rows=32, cols=32)
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):
        assert reconstruct(tmp_path / "study", out, *FAST) == 2
    err = capsys.readouterr().err
    assert "in use by another resample-med run" in err and f"pid {os.getpid()}" in err
    assert socket.gethostname() in err
    assert not (out / "report.json").exists()
    assert reconstruct(tmp_path / "study", out, *FAST) == 0


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path, capsys):
    write_series(tmp_path / "study", 3, rows=32, cols=32)
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / OutputLock.FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with pytest.warns(UserWarning, match=f"stale lock.*pid {dead.pid}"):
        assert reconstruct(tmp_path / "study", out, *FAST) == 0
    assert not (out / OutputLock.FILE).exists()


# --- 7. OUT is a file ------------------------------------------------------------------------------------------


def test_output_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    write_series(tmp_path / "study", 3, rows=32, cols=32)
    out = tmp_path / "out.txt"
    out.write_text("mine")
    assert reconstruct(tmp_path / "study", out, *FAST) == 2
    err = capsys.readouterr().err
    assert f"{out}: is a file, not a folder" in err and "Traceback" not in err
    assert out.read_text() == "mine"


# --- 8. a killed DICOM write leaves nothing our discovery reads, and is cleaned up ----------------------------------


KILL_DURING_DICOM_WRITE = textwrap.dedent("""
    import os, signal, sys
    import pydicom
    from resample_med.cli import main
    real, written = pydicom.Dataset.save_as, []
    def save_as(self, *args, **kwargs):
        if args and 'IM' in str(args[0]) and len(written) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        written.append(args)
        return real(self, *args, **kwargs)
    pydicom.Dataset.save_as = save_as
    sys.exit(main(sys.argv[1:]))
""")


def test_killed_dicom_write_is_invisible_and_cleaned_on_the_next_run(tmp_path):
    study = tmp_path / "study"
    write_series(study, 4, rows=32, cols=32)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_DICOM_WRITE, "reconstruct", str(study), str(out), *FAST],
        env=env,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL
    leftovers = [p for p in out.iterdir() if "partial" in p.name and p.name != ".partial"]
    assert leftovers and not (out / "dicom").exists()
    with pytest.raises(DicomInputError, match="no DICOM files"):
        discover_series(out)
    with pytest.warns(UserWarning, match="stale lock"):
        assert reconstruct(study, out, *FAST) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "dicom", "report.json"]
    assert len(discover_series(out)) == 1


# --- 9. a corrupt checkpoint slice is recomputed, alone, with a warning -----------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_checkpoint_slice_is_recomputed(tmp_path, spy, damage):
    study = tmp_path / "study"
    write_series(study, 4, rows=32, cols=32)
    fresh = tmp_path / "fresh"
    assert reconstruct(study, fresh, *FAST) == 0
    out = tmp_path / "out"
    spy.interrupt_at, spy.calls = 3, []
    assert reconstruct(study, out, *FAST, "--batch-size", "1") == 130
    victim = out / ".partial" / "slice_00001.npz"
    raw = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(raw[: len(raw) // 2])
    else:
        with zipfile.ZipFile(victim) as archive:
            info = archive.getinfo("hu.npy")
        at = info.header_offset + 30 + len(info.filename) + info.extra.__len__() + 200
        victim.write_bytes(raw[:at] + bytes([raw[at] ^ 0x40]) + raw[at + 1 :])
    spy.interrupt_at, spy.calls = 0, []
    with pytest.warns(UserWarning, match="slice_00001.npz.*recomput"):
        assert reconstruct(study, out, *FAST, "--batch-size", "1") == 0
    assert sum(spy.calls) == 3  # slice 1 again, slices 2 and 3 for the first time
    for name in ("IM00001.dcm", "IM00002.dcm", "IM00004.dcm"):
        assert pydicom.dcmread(out / "dicom" / name).PixelData == pydicom.dcmread(fresh / "dicom" / name).PixelData


# --- 10. nothing created for a failed run; Laterality; an output folder beside a NIfTI file --------------------------


@pytest.mark.parametrize("case", ["slices", "unreadable"])
def test_failed_run_leaves_no_output_folder(tmp_path, case):
    study = tmp_path / "study"
    paths, _, _ = write_series(study, 3, rows=32, cols=32)
    extra = ["--slices", "7:9"] if case == "slices" else []
    if case == "unreadable":
        for p in paths:
            p.write_bytes(p.read_bytes()[:1000])
    out = tmp_path / "deep" / "out"
    assert reconstruct(study, out, *FAST, *extra) == 2
    assert not (tmp_path / "deep").exists()


@pytest.mark.parametrize(
    ("laterality", "body_part", "expected"),
    [("R", "KIDNEY", "R"), (None, "PARTIALBODY", ""), (None, None, ""), (None, "ABDOMEN", None)],
)
def test_derived_series_has_laterality_when_required(tmp_path, laterality, body_part, expected):
    study = tmp_path / "study"
    paths, _, _ = write_series(study, 2, rows=32, cols=32)
    for path in paths:
        ds = pydicom.dcmread(path)
        if laterality:
            ds.Laterality = laterality
        if body_part:
            ds.BodyPartExamined = body_part
        ds.save_as(path, enforce_file_format=True)
    out = tmp_path / "out"
    assert reconstruct(study, out, *FAST) == 0
    derived = pydicom.dcmread(out / "dicom" / "IM00001.dcm")
    assert derived.get("Laterality") == expected


def test_output_folder_beside_a_nifti_file_is_allowed(tmp_path, capsys):
    path = write_nifti_hu(tmp_path / "data" / "ct.nii.gz", phantom_hu(2))
    assert reconstruct(path, tmp_path / "data" / "out", *FAST) == 0
    assert (tmp_path / "data" / "out" / "report.json").is_file()
    assert reconstruct(path, tmp_path / "data", *FAST) == 2
    assert "input" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ct.nii.gz", "out"]
