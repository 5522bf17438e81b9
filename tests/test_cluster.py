"""Many studies at once: chunk planning, the local executor, and the Ray executor on a local 2-CPU Ray.

The Ray tests start one local Ray instance for the module (``num_cpus=2``) and run a tiny untrained
prior on small synthetic studies; they skip where Ray is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from io_synthetic import write_series

from resample_med.cli import main
from resample_med.config import resolve_config
from resample_med.io import load_series
from resample_med.models import create_bundle
from resample_med.pipeline import SharedStorageError, SliceCheckpoint, reconstruct_studies
from resample_med.pipeline.studies import (
    ChunkCheckpoint,
    StudySettings,
    StudyWorker,
    check_marker,
    chunk_ranges,
    fold_chunks,
    write_marker,
)

SLICES = {"study_a": 6, "study_b": 4, "study_c": 3}
"""Studies of the test folder and their slice counts."""
BATCH = 2
CHUNK = 2
RAY_MISSING = 'Ray is not installed: pip install -e ".[cluster]" to run the cluster tests'

pytestmark = pytest.mark.usefixtures("single_torch_thread")
"""The serial reference runs on one torch thread, as each Ray worker does (``--cpus-per-worker 1``):
PyTorch's CPU convolutions round differently with another thread count."""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A saved untrained tiny bundle (32x32 images)."""
    return str(create_bundle("tiny", seed=0).save(tmp_path_factory.mktemp("tiny_model")))


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    """A folder of three small synthetic CT studies."""
    root = tmp_path_factory.mktemp("studies")
    for name, n in SLICES.items():
        write_series(root / name, n=n, rows=40, cols=36)
    return root


def cli_options(model: str) -> list[str]:
    """Options of the serial reference run: tiny prior, 2 ReSample steps, 8 views, batches of 2."""
    return [
        "--model",
        model,
        "--method",
        "resample",
        "--preset",
        "fast",
        "--steps",
        "2",
        "--views",
        "8",
        "--batch-size",
        str(BATCH),
        "--device",
        "cpu",
        "--seed",
        "3",
    ]


def run_config(model: str) -> object:
    """The same settings as :func:`cli_options`, as a RunConfig for the Python API."""
    return resolve_config(
        None,
        {
            "acquisition": {"n_views": 8},
            "reconstruction": {
                "method": "resample",
                "preset": "fast",
                "model": model,
                "batch_size": BATCH,
                "device": "cpu",
                "seed": 3,
            },
            "sampler": {"steps": 2},
        },
    )


@pytest.fixture(scope="module")
def serial(tmp_path_factory, studies, tiny_model) -> Path:
    """The serial CLI run (default local executor) every other run must reproduce pixel for pixel."""
    out = tmp_path_factory.mktemp("serial") / "out"
    assert main(["reconstruct", str(studies), str(out), *cli_options(tiny_model)]) == 0
    return out


def assert_same_pixels(out: Path, reference: Path, names=tuple(SLICES)) -> None:
    """Every series in ``out`` has exactly the HU of the reference run (and every slice is there)."""
    for name in names:
        got, want = load_series(out / name / "dicom").hu, load_series(reference / name / "dicom").hu
        assert got.shape == want.shape == (SLICES[name], 40, 36)
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_chunks_are_whole_batches_and_only_unfinished_ones():
    assert chunk_ranges(7, range(7), batch_size=2, chunk_slices=3) == [(0, 4), (4, 7)]
    assert chunk_ranges(10, [5, 9], batch_size=4, chunk_slices=4) == [(4, 8), (8, 10)]
    assert chunk_ranges(6, [], batch_size=2, chunk_slices=2) == []
    with pytest.raises(ValueError, match="chunk_slices"):
        chunk_ranges(6, [0], batch_size=2, chunk_slices=0)


def test_a_chunk_redoes_a_partly_saved_batch_and_writes_only_its_own_checkpoint(tmp_path):
    series = SliceCheckpoint.open(tmp_path / ".partial", {"input": "x"})
    hu = np.zeros((4, 4), np.float32)
    for index in (0, 1, 2):  # batch [2, 3] was cut short when slice 2 was saved
        series.save(index, hu + index, None, {"index": index})
    chunk = ChunkCheckpoint(series, start=0, stop=4, batch_size=2)
    assert chunk.done() == {0, 1}
    chunk.save(2, hu + 20, None, {"index": 2})
    chunk.save(3, hu + 30, None, {"index": 3})
    assert series.done() == {0, 1, 2}  # untouched while chunks run
    fold_chunks(series)
    assert series.done() == {0, 1, 2, 3} and series.load(2)[0][0, 0] == 20
    assert not list((tmp_path / ".partial" / "chunks").glob("*/slice_*.npz"))


def test_local_executor_equals_the_serial_cli(tmp_path, studies, tiny_model, serial):
    report = reconstruct_studies(studies, tmp_path / "out", run_config(tiny_model), chunk_slices=CHUNK)
    assert report["counts"] == {"done": 3, "skipped": 0, "failed": 0}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["counts"] == report["counts"]
    assert_same_pixels(tmp_path / "out", serial)


def test_a_worker_that_cannot_see_output_says_so(tmp_path, tiny_model):
    marker = write_marker(tmp_path / "out")
    check_marker(marker)
    settings = StudySettings(run_config(tiny_model), "cpu", "fast", None, output=str(tmp_path / "out"))
    worker = StudyWorker(settings, marker=str(tmp_path / "elsewhere" / marker.name))
    with pytest.raises(SharedStorageError, match="file system every node mounts at the same path"):
        worker.ready()


def test_without_ray_executor_ray_says_so_in_one_line(tmp_path, studies):
    code = (
        "import sys; sys.modules['ray'] = None\n"  # makes `import ray` fail as if it were not installed
        "from resample_med.cli import main\n"
        f"sys.exit(main(['reconstruct', {str(studies)!r}, {str(tmp_path / 'out')!r}, '--executor', 'ray']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "resample-med reconstruct: error: --executor ray needs Ray, which is not installed: "
        'pip install "resample-med[cluster]" (in a checkout: pip install -e ".[cluster]")'
    ]
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance with 2 CPUs for the module's Ray tests."""
    ray = pytest.importorskip("ray", reason=RAY_MISSING)
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")  # a busy machine registers its node slowly
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_equals_the_serial_run_pixel_for_pixel(tmp_path, ray_cluster, studies, tiny_model, serial):
    out = tmp_path / "out"
    assert (
        main(
            [
                "reconstruct",
                str(studies),
                str(out),
                *cli_options(tiny_model),
                "--executor",
                "ray",
                "--chunk-slices",
                str(CHUNK),
            ]
        )
        == 0
    )
    assert_same_pixels(out, serial)
    report = json.loads((out / "report.json").read_text())
    assert report["executor"]["name"] == "ray" and report["executor"]["workers"] == 2
    assert [(s["series"], s["status"], s["slices_computed"]) for s in report["series"]] == [
        (name, "done", n) for name, n in SLICES.items()
    ]
    series_report = json.loads((out / "study_a" / "report.json").read_text())
    assert series_report["executor"]["name"] == "ray"
    assert not any(r["resumed"] for r in series_report["per_slice"])
    assert not (out / "study_a" / ".partial").exists()
    assert not list(out.glob(".resample-med-shared-*"))


def test_a_killed_worker_is_replaced_and_every_slice_is_written(tmp_path, ray_cluster, studies, tiny_model, serial):
    events: list[dict] = []

    def on_event(event: dict) -> None:
        events.append(event)
        if event["event"] == "chunk_done" and sum(e["event"] == "chunk_done" for e in events) == 1:
            # the worker that just finished a chunk: the driver hands it the next task, which dies with it
            ray_cluster.kill(ray_cluster.get_actor(event["actor"]))

    report = reconstruct_studies(
        studies, tmp_path / "out", run_config(tiny_model), executor="ray", chunk_slices=CHUNK, on_event=on_event
    )
    assert report["counts"]["done"] == 3
    lost = [e for e in events if e["event"] == "worker_lost"]
    assert len(lost) == 1 and lost[0]["actor"] == next(e["actor"] for e in events if e["event"] == "chunk_done")
    assert sum(s["retries"] for s in report["series"]) == 1
    assert report["executor"]["worker_starts"] == 3
    assert_same_pixels(tmp_path / "out", serial)


def test_a_bad_study_is_reported_while_the_others_finish(tmp_path, ray_cluster, studies, tiny_model):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in SLICES:
        (mixed / name).symlink_to(studies / name, target_is_directory=True)
    write_series(mixed / "study_mr", n=3, modality="MR")  # refused when the folder is scanned
    report = reconstruct_studies(
        mixed, tmp_path / "out", run_config(tiny_model), executor="ray", chunk_slices=CHUNK, slices="3:5"
    )  # study_c has 3 slices: fails on its worker
    status = {s["series"]: (s["status"], s["error"]) for s in report["series"]}
    assert status["study_a"] == status["study_b"] == ("done", None)
    assert status["study_c"][0] == "failed" and "--slices 3:5" in status["study_c"][1]
    assert status["study_mr"][0] == "failed" and "MR" in status["study_mr"][1]
    assert report["counts"] == {"done": 2, "skipped": 0, "failed": 2}
    assert load_series(tmp_path / "out" / "study_a" / "dicom").hu.shape[0] == 2


def test_an_interrupted_driver_resumes_on_rerun(tmp_path, ray_cluster, studies, tiny_model, serial):
    out = tmp_path / "out"

    def interrupt(event: dict) -> None:
        if event["event"] == "chunk_done":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct_studies(
            studies, out, run_config(tiny_model), executor="ray", chunk_slices=CHUNK, on_event=interrupt
        )
    kept = {
        name: {int(p.stem.split("_")[1]) for p in (out / name / ".partial").rglob("slice_*.npz")} for name in SLICES
    }  # in the series' checkpoint and its chunks' checkpoints
    assert any(kept.values()) and not (out / "report.json").exists()

    report = reconstruct_studies(studies, out, run_config(tiny_model), executor="ray", chunk_slices=CHUNK)
    assert report["counts"]["done"] == 3
    for row in report["series"]:
        name = row["series"]
        assert row["slices_resumed"] >= len(kept[name])
        assert row["slices_computed"] == SLICES[name] - row["slices_resumed"]
        per_slice = json.loads((out / name / "report.json").read_text())["per_slice"]
        assert {r["index"] for r in per_slice if r["resumed"]} >= kept[name]
    assert_same_pixels(out, serial)


def test_ray_options_without_executor_ray_are_refused(tmp_path, studies, capsys):
    assert main(["reconstruct", str(studies), str(tmp_path / "out"), "--method", "fbp", "--workers", "2"]) == 2
    assert "--workers only apply with --executor ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_volume_mode_is_refused_with_executor_ray(tmp_path, studies, capsys):
    argv = ["reconstruct", str(studies), str(tmp_path / "out"), "--method", "tv", "--volume-mode", "--executor", "ray"]
    assert main(argv) == 2
    assert "--volume-mode is not available with --executor ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
