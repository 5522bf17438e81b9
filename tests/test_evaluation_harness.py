"""The evaluation package on tiny inputs (CPU, seconds): the tuned-values store, per-slice data,
the harness with the classical methods, merging runs, and ``resample-med evaluate``."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from resample_med.cli import main as cli_main
from resample_med.evaluation import harness
from resample_med.evaluation.data import Setting, load_split, simulate
from resample_med.sampling import tuned
from resample_med.sampling.baselines.latent_dps import PRESETS as DPS_PRESETS
from resample_med.sampling.baselines.tv import TVConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory) -> Path:
    """A val split of four 32x32 disc phantoms (different radii)."""
    root = tmp_path_factory.mktemp("tiny_split")
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    images = np.stack([np.where(xx**2 + yy**2 < r, 40.0, -1000.0) for r in (0.3, 0.4, 0.5, 0.6)]).astype(np.int16)
    np.savez(
        root / "tiny.npz",
        images_hu=images,
        split=np.array(["val"] * 4),
        patient=np.array(list("abcd")),
        anatomy=np.array(["phantom"] * 4),
    )
    return root / "tiny.npz"


def test_tuned_store_round_trip_keeps_other_entries_and_records_provenance(tmp_path: Path) -> None:
    store = tmp_path / "tuned.json"
    store.write_text(tuned.TUNED_FILE.read_text())
    store.chmod(0o644)
    before = tuned.load(store)
    tuned.store("TV_WEIGHT", 0.0316, "python benchmarks/tune.py tv on 2026-12-01: a test", path=store)
    after = tuned.load(store)
    assert after["TV_WEIGHT"].value == 0.0316
    assert after["TV_WEIGHT"].provenance == "python benchmarks/tune.py tv on 2026-12-01: a test"
    assert after["TV_WEIGHT"].description == before["TV_WEIGHT"].description
    assert {k: v for k, v in after.items() if k != "TV_WEIGHT"} == {k: v for k, v in before.items() if k != "TV_WEIGHT"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuned.json"]  # no temporary file left behind
    assert stat.S_IMODE(store.stat().st_mode) == 0o644
    with pytest.raises(KeyError, match="no entry 'TV_WIEGHT'"):
        tuned.store("TV_WIEGHT", 0.1, "typo", path=store)
    with pytest.raises(ValueError, match="not a finite number"):
        tuned.store("TV_WEIGHT", float("nan"), "diverged", path=store)
    assert tuned.load(store) == after  # refused writes change nothing
    store.write_text(json.dumps({"TV_WEIGHT": {"value": "0.01", "description": "", "provenance": ""}}))
    with pytest.raises(ValueError, match=f"{store}: TV_WEIGHT has value '0.01'"):
        tuned.load(store)
    store.write_text("TV_WEIGHT = 0.01\n")
    with pytest.raises(ValueError, match="not a store of tuned values"):
        tuned.load(store)


def test_the_engine_reads_the_shipped_store_and_the_wheel_ships_it() -> None:
    shipped = tuned.load()
    assert TVConfig().weight == tuned.TV_WEIGHT == shipped["TV_WEIGHT"].value
    fast_step = shipped["LATENT_DPS_FAST_STEP_SIZE"].value
    assert DPS_PRESETS["fast"].step_size == tuned.LATENT_DPS_FAST_STEP_SIZE == fast_step
    assert tuned.RESAMPLE_Z_WEIGHT == shipped["RESAMPLE_Z_WEIGHT"].value
    assert tuned.TV_Z_WEIGHT == shipped["TV_Z_WEIGHT"].value
    assert all(entry.provenance and entry.description for entry in shipped.values())
    assert tuned.provenance("TV_WEIGHT") == shipped["TV_WEIGHT"].provenance
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()  # no tomllib: Python 3.10 is supported
    package_data = pyproject.split("[tool.setuptools.package-data]")[1].split("\n[")[0]
    resample_med_line = next(line for line in package_data.splitlines() if line.startswith("resample_med ="))
    assert '"sampling/tuned.json"' in resample_med_line


def test_a_slice_has_the_same_data_in_every_subset(tiny_split: Path) -> None:
    hu, _ = load_split(tiny_split, "val")
    setting = Setting("fan", 8, "matched")
    whole = simulate(hu, np.arange(4), setting, photons=1e4, pixel_spacing=1.4, seed=3)
    part = simulate(hu, np.array([1, 3]), setting, photons=1e4, pixel_spacing=1.4, seed=3)
    torch.testing.assert_close(part.sinogram, whole.sinogram[[1, 3]], rtol=0, atol=0)
    torch.testing.assert_close(part.reference_hu, whole.reference_hu[[1, 3]])
    other_seed = simulate(hu, np.array([1, 3]), setting, photons=1e4, pixel_spacing=1.4, seed=4)
    assert not torch.equal(other_seed.sinogram, part.sinogram)
    # the two simulations share the noise stream: they differ by the model only, not by fresh noise
    independent = simulate(
        hu, np.array([1, 3]), Setting("fan", 8, "independent"), photons=1e4, pixel_spacing=1.4, seed=3
    )
    assert (independent.sinogram - part.sinogram).abs().mean() < 0.1 * part.sinogram.abs().mean()


def test_harness_runs_fbp_and_tv_and_merges_runs_on_different_subsets(tiny_split: Path, tmp_path: Path) -> None:
    common = [
        "--data",
        str(tiny_split),
        "--views",
        "8",
        "--geometries",
        "parallel",
        "--batch-size",
        "3",
        "--uncertainty-samples",
        "1",
    ]
    harness.main(common + ["--methods", "fbp", "tv", "--out", str(tmp_path / "all")])
    harness.main(
        common + ["--n-slices", "2", "--methods", "tv", "--note", "subset run", "--out", str(tmp_path / "sub")]
    )
    label = "parallel, 8 views, independent simulation"
    whole = json.loads((tmp_path / "all" / "quality.json").read_text())
    sub = json.loads((tmp_path / "sub" / "quality.json").read_text())
    fbp, tv = whole["results"][label]
    assert [fbp["method"], tv["method"]] == ["fbp", "tv"] and fbp["slices"] == [0, 1, 2, 3]
    assert tv["config"]["weight"] == tuned.TV_WEIGHT
    assert np.mean(tv["psnr"]) > np.mean(fbp["psnr"]) > 10
    assert all(r["seconds_per_slice"] > 0 and r["peak_memory_mib"] > 0 for r in (fbp, tv))
    assert all(0 < c < 100 for c in tv["chi2_per_ray"]) and all(0 < r < 1 for r in tv["rel_residual"])
    assert whole["context"]["notes"][0] == harness.SEEDING_NOTE and whole["context"]["command"].startswith(
        "python benchmarks/evaluate.py --data"
    )
    sub_tv = sub["results"][label][0]
    assert sub_tv["slices"] == [0, 3]
    assert sub_tv["psnr"] == pytest.approx([tv["psnr"][0], tv["psnr"][3]], abs=1e-5)  # same data (float32 batches)
    harness.main(
        ["--merge", str(tmp_path / "sub"), str(tmp_path / "all"), "--note", "merged", "--out", str(tmp_path / "merged")]
    )
    merged = json.loads((tmp_path / "merged" / "quality.json").read_text())
    rows = merged["results"][label]
    assert [r["method"] for r in rows] == ["fbp", "tv"]
    assert rows[1]["slices"] == [0, 1, 2, 3]  # the row on more slices is kept, whatever the order
    assert merged["context"]["notes"] == [harness.SEEDING_NOTE, "subset run", "merged"]
    assert merged["context"]["command"].count(" ; ") == 2
    report = (tmp_path / "merged" / "quality.md").read_text()
    assert "| fbp | 4 |" in report and "| tv | 4 |" in report and "| tv | 2 |" not in report
    # a matched-simulation run merged first: the measurement line names both simulations
    harness.main(
        common + ["--n-slices", "1", "--methods", "fbp", "--simulations", "matched", "--out", str(tmp_path / "m")]
    )
    harness.main(["--merge", str(tmp_path / "m"), str(tmp_path / "all"), "--out", str(tmp_path / "both")])
    both = json.loads((tmp_path / "both" / "quality.json").read_text())["context"]
    assert both["simulations"] == ["independent", "matched"]
    assert "simulation: independent and matched (" in both["measurements"]
    with pytest.raises(SystemExit, match=f"--merge {tmp_path / 'nothing'}: no readable quality.json"):
        harness.main(["--merge", str(tmp_path / "nothing"), "--out", str(tmp_path / "merged2")])
    with pytest.raises(SystemExit, match="--data .*missing.npz: no such file"):
        harness.main(["--data", str(tmp_path / "missing.npz"), "--methods", "fbp", "--out", str(tmp_path / "x")])


def test_resample_med_evaluate_runs_the_package_harness(tiny_split: Path, tmp_path: Path) -> None:
    from resample_med.cli import evaluate as cli_evaluate

    assert not hasattr(cli_evaluate, "HARNESS")  # no script loaded by path
    code = cli_main(
        [
            "evaluate",
            "--data",
            str(tiny_split),
            "--n-slices",
            "1",
            "--views",
            "8",
            "--geometries",
            "fan",
            "--methods",
            "fbp",
            "--uncertainty-samples",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code in (None, 0)
    assert "resample_med.evaluation.harness" in sys.modules
    raw = json.loads((tmp_path / "quality.json").read_text())
    assert raw["context"]["command"].startswith("resample-med evaluate --data")
    assert [r["method"] for r in raw["results"]["fan, 8 views, independent simulation"]] == ["fbp"]
