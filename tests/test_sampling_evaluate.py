"""The evaluation harness (resample_med.evaluation) end to end on a tiny synthetic case (32x32 slices, tiny prior)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from resample_med.evaluation import harness, tuning
from resample_med.evaluation.data import evaluation_indices
from resample_med.sampling import tuned


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory) -> tuple[Path, Path]:
    """A val split of four 32x32 disc phantoms and a saved tiny (untrained) prior."""
    models = pytest.importorskip("resample_med.models")
    root = tmp_path_factory.mktemp("tiny_eval")
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    images = np.stack([np.where(xx**2 + yy**2 < r, 40.0, -1000.0) for r in (0.3, 0.4, 0.5, 0.6)]).astype(np.int16)
    np.savez(
        root / "tiny.npz",
        images_hu=images,
        split=np.array(["val"] * 4),
        patient=np.array(list("abcd")),
        anatomy=np.array(["phantom"] * 4),
    )
    models.create_bundle("tiny", seed=0).save(root / "prior")
    return root / "tiny.npz", root / "prior"


@pytest.mark.slow
def test_evaluate_writes_report_and_figure(tiny_case, tmp_path: Path) -> None:
    data, prior = tiny_case
    out = tmp_path / "results"
    harness.main(
        [
            "--data",
            str(data),
            "--model",
            str(prior),
            "--n-slices",
            "3",
            "--views",
            "8",
            "--geometries",
            "parallel",
            "fan",
            "--preset",
            "fast",
            "--batch-size",
            "2",
            "--figure-setting",
            "parallel",
            "8",
            "--figure-slices",
            "2",
            "--uncertainty-samples",
            "2",
            "--out",
            str(out),
        ]
    )
    report = (out / "quality.md").read_text()
    # the default simulation is the independent one, and every table says so
    assert (
        "## parallel, 8 views, independent simulation" in report and "## fan, 8 views, independent simulation" in report
    )
    assert "| tv |" in report and "| resample |" in report and "ReSample's margins" in report
    raw = json.loads((out / "quality.json").read_text())
    assert raw["context"]["simulations"] == ["independent"]
    assert raw["settings"]["parallel, 8 views, independent simulation"]["simulation"] == "independent"
    rows = raw["results"]["parallel, 8 views, independent simulation"]
    assert [r["method"] for r in rows] == ["fbp", "cgls", "tv", "latent_dps", "resample", "resample_posterior"]
    assert all(r["seconds_per_slice"] > 0 and r["peak_memory_mib"] > 0 for r in rows)
    assert all(len(r["psnr"]) == 3 for r in rows[:-1])
    fbp, cgls = rows[0], rows[1]
    assert np.mean(fbp["psnr"]) > 10 and np.mean(cgls["ssim"]) > 0
    # two posterior samples on the (up to 8) evaluated slices: the calibration per slice; the
    # resample row is itself the mean of fast's posterior samples, so it is calibrated too
    posterior = rows[-1]
    assert posterior["extra"]["n_samples"] == 2 and len(posterior["extra"]["coverage"]) == 3
    assert all(0.0 <= c <= 1.0 for c in posterior["extra"]["coverage"])
    assert rows[-2]["extra"]["n_samples"] == 2 and len(rows[-2]["extra"]["spearman"]) == 3
    label = "parallel, 8 views, independent simulation"
    assert "## Uncertainty calibration" in report and f"| {label} | resample_posterior | 3 | 2 |" in report
    assert f"| {label} | resample | 3 | 2 |" in report
    assert (out / "quality_figure.png").is_file()


def test_evaluation_indices_are_even_and_unique() -> None:
    assert evaluation_indices(42, None).tolist() == list(range(42))
    idx = evaluation_indices(42, 8)
    assert len(idx) == 8 and idx[0] == 0 and idx[-1] == 41


@pytest.mark.slow
def test_runs_on_different_subsets_merge_and_pair_by_slice(tiny_case, tmp_path: Path) -> None:
    """Cheap methods on all slices, a costly one on a subset: the merged margins compare the
    same slices with the same noise (a slice's measurement does not depend on the subset)."""
    data, prior = tiny_case
    common = [
        "--data",
        str(data),
        "--model",
        str(prior),
        "--views",
        "8",
        "--geometries",
        "parallel",
        "--preset",
        "fast",
        "--batch-size",
        "2",
        "--figure-setting",
        "parallel",
        "0",
    ]
    harness.main(common + ["--methods", "tv", "resample", "--out", str(tmp_path / "all")])
    harness.main(common + ["--n-slices", "2", "--methods", "tv", "latent_dps", "--out", str(tmp_path / "subset")])
    harness.main(["--merge", str(tmp_path / "all"), str(tmp_path / "subset"), "--out", str(tmp_path / "merged")])
    label = "parallel, 8 views, independent simulation"
    all_tv = json.loads((tmp_path / "all" / "quality.json").read_text())["results"][label][0]
    sub_tv = json.loads((tmp_path / "subset" / "quality.json").read_text())["results"][label][0]
    assert all_tv["slices"] == [0, 1, 2, 3] and sub_tv["slices"] == [0, 3]
    assert sub_tv["psnr"] == pytest.approx([all_tv["psnr"][0], all_tv["psnr"][3]], abs=1e-6)
    report = (tmp_path / "merged" / "quality.md").read_text()
    assert "| latent_dps | 2 |" in report and "| tv | 4 |" in report
    assert f"| {label} | latent_dps |" in report and "/2 slices |" in report
    # the row on more slices wins whatever the order of the runs
    harness.main(["--merge", str(tmp_path / "subset"), str(tmp_path / "all"), "--out", str(tmp_path / "reversed")])
    reversed_report = (tmp_path / "reversed" / "quality.md").read_text()
    assert "| tv | 4 |" in reversed_report and "| tv | 2 |" not in reversed_report


@pytest.mark.slow
def test_tune_writes_the_best_grid_value(tiny_case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, prior = tiny_case
    store = tmp_path / "tuned.json"
    store.write_text(tuned.TUNED_FILE.read_text())
    monkeypatch.setattr(tuning, "STORE", store)
    monkeypatch.setitem(tuning.TUNABLES, "tv", tuning.Tunable("TV weight", (1e-4, 0.5), "TV_WEIGHT", "weight"))
    tuning.main(
        ["tv", "--data", str(data), "--n-slices", "2", "--tune-slices", "2", "--views", "8", "--geometries", "parallel"]
    )
    entry = tuned.load(store)["TV_WEIGHT"]
    assert entry.value in (1e-4, 0.5)
    assert entry.provenance.startswith("python benchmarks/tune.py tv --data")
    assert "val slices [1, 2]" in entry.provenance
    assert tuned.load(store)["LATENT_DPS_FAST_STEP_SIZE"] == tuned.load()["LATENT_DPS_FAST_STEP_SIZE"]
    # the evaluate script's --tune is the same tuning
    harness.main(
        [
            "--tune",
            "tv",
            "--data",
            str(data),
            "--n-slices",
            "2",
            "--tune-slices",
            "2",
            "--views",
            "8",
            "--geometries",
            "parallel",
        ]
    )
    assert tuned.load(store)["TV_WEIGHT"].provenance.startswith("python benchmarks/evaluate.py --tune tv")


@pytest.mark.slow
def test_both_simulations_and_old_results_merge(tiny_case, tmp_path: Path) -> None:
    """``--simulations independent matched`` gives a table per simulation with different data;
    results written before simulations were named merge in as ``matched``."""
    data, prior = tiny_case
    harness.main(
        [
            "--data",
            str(data),
            "--model",
            str(prior),
            "--views",
            "8",
            "--geometries",
            "parallel",
            "--methods",
            "fbp",
            "--simulations",
            "independent",
            "matched",
            "--out",
            str(tmp_path / "both"),
        ]
    )
    raw = json.loads((tmp_path / "both" / "quality.json").read_text())
    independent = raw["results"]["parallel, 8 views, independent simulation"][0]["psnr"]
    matched = raw["results"]["parallel, 8 views, matched simulation"][0]["psnr"]
    assert independent != matched and np.allclose(independent, matched, atol=3.0)
    old = tmp_path / "old"
    old.mkdir()
    legacy = {
        "context": dict(raw["context"], simulations=None),
        "results": {
            "parallel, 8 views": [dict(raw["results"]["parallel, 8 views, matched simulation"][0], method="cgls")]
        },
    }
    del legacy["context"]["simulations"]
    (old / "quality.json").write_text(json.dumps(legacy))
    harness.main(["--merge", str(tmp_path / "both"), str(old), "--out", str(tmp_path / "merged")])
    merged = json.loads((tmp_path / "merged" / "quality.json").read_text())
    assert [r["method"] for r in merged["results"]["parallel, 8 views, matched simulation"]] == ["fbp", "cgls"]
    assert merged["context"]["simulations"] == ["independent", "matched"]


@pytest.mark.slow
def test_sampler_overrides_and_posterior_means(tiny_case, tmp_path: Path) -> None:
    """A candidate configuration runs through the harness without a preset of its own."""
    data, prior = tiny_case
    common = [
        "--data",
        str(data),
        "--model",
        str(prior),
        "--n-slices",
        "2",
        "--views",
        "8",
        "--geometries",
        "fan",
        "--methods",
        "resample",
        "--preset",
        "fast",
        "--figure-setting",
        "parallel",
        "0",
        "--uncertainty-samples",
        "1",
        "--out",
        str(tmp_path / "out"),
    ]
    harness.main(
        common
        + [
            "--sampler",
            "warm_start=tv",
            "--sampler",
            "warm_start_skip_fraction=0.7",
            "--sampler",
            "final_tau=4",
            "--sampler",
            "posterior_samples=2",
        ]
    )
    raw = json.loads((tmp_path / "out" / "quality.json").read_text())
    row = raw["results"]["fan, 8 views, independent simulation"][0]
    assert row["config"]["warm_start"] == "tv" and row["config"]["warm_start_skip_fraction"] == 0.7
    assert row["config"]["final_tau"] == 4 and raw["context"]["resample_samples"] == 2
    assert (
        "with `warm_start=tv warm_start_skip_fraction=0.7 final_tau=4 posterior_samples=2`, ReSample rows the mean of 2"
        in (tmp_path / "out" / "quality.md").read_text()
    )
    with pytest.raises(SystemExit, match="--sampler 'warm_starts=tv' is not KEY=VALUE"):
        harness.main(common + ["--sampler", "warm_starts=tv"])
    with pytest.raises(SystemExit, match="warm_start_skip_fraction must lie in"):
        harness.main(common + ["--sampler", "warm_start=tv", "--sampler", "warm_start_skip_fraction=1.5"])
