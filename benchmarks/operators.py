"""Projector speed: resample_med (sparse Joseph matrix) vs. astra-toolbox (CPU) and scikit-image.

Times forward projection, adjoint / backprojection and FBP at 256x256 with 20, 60 and 180
parallel views and at 512x512 with 180 fan views, batch 1 and 16, plus the system-matrix build
time (cold, empty cache) and the load time from the on-disk cache. Reference libraries run in the
same process on the same data; batch 16 for them is a loop (neither has batching). Prints a
Markdown table and writes it to ``benchmarks/results/operators.md``.

    python benchmarks/operators.py                    # CPU, torch's default thread count
    python benchmarks/operators.py --threads 1 2      # our timings at 1 and at 2 threads
    python benchmarks/operators.py --device cuda      # our operators on the GPU, references on the CPU
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resample_med.geometry import FanBeamGeometry, Geometry, ParallelBeamGeometry
from resample_med.operators import cache, clear_memory_cache, make_projector

RESULTS = Path(__file__).resolve().parent / "results" / "operators.md"
BATCHES = (1, 16)
TARGET_ASTRA_SPEEDUP = 3.0
"""Issue target: our forward at 256x256 x 60 views at least this much faster than astra's CPU forward."""
TARGET_FAN_BUILD_S = 10.0
TARGET_FAN_FORWARD_MS = 100.0


@dataclass(frozen=True)
class Case:
    """One benchmarked geometry."""

    name: str
    geometry: Geometry


CASES = (
    Case("parallel 256^2 x 20", ParallelBeamGeometry.sparse_view(20, image_size=256)),
    Case("parallel 256^2 x 60", ParallelBeamGeometry.sparse_view(60, image_size=256)),
    Case("parallel 256^2 x 180", ParallelBeamGeometry.sparse_view(180, image_size=256)),
    Case("fan 512^2 x 180", FanBeamGeometry.sparse_view(180, image_size=512)),
)


def median_ms(fn: Callable[[], object], repeats: int, synchronize: Callable[[], None]) -> float:
    """Median wall time of ``fn`` in ms over ``repeats`` runs after one warm-up run."""
    fn()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_ours(case: Case, device: torch.device, repeats: int) -> dict[str, float]:
    """Forward / adjoint / FBP of our projector (ms), batch 1 and 16, on ``device``."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    projector = make_projector(case.geometry, device=device)
    generator = torch.Generator().manual_seed(0)
    out: dict[str, float] = {}
    for batch in BATCHES:
        x = torch.rand(batch, *projector.image_shape, generator=generator).to(device)
        y = projector.forward(x)
        out[f"forward B{batch}"] = median_ms(lambda x=x: projector.forward(x), repeats, sync)
        out[f"adjoint B{batch}"] = median_ms(lambda y=y: projector.adjoint(y), repeats, sync)
        out[f"fbp B{batch}"] = median_ms(lambda y=y: projector.fbp(y), repeats, sync)
    return out


def time_build_and_load(case: Case) -> dict[str, float]:
    """Cold build (no file in the cache folder), then load from disk with memory cleared (s).

    Leaves the file in the cache folder, so the timing runs that follow load rather than rebuild.
    """
    clear_memory_cache()
    cache.cache_path(case.geometry).unlink(missing_ok=True)
    start = time.perf_counter()
    projector = make_projector(case.geometry)
    build = time.perf_counter() - start
    nnz = projector.nnz
    clear_memory_cache()
    start = time.perf_counter()
    projector = make_projector(case.geometry)
    projector.forward(torch.zeros(1, *projector.image_shape))  # pages A in (A^T: on the first adjoint)
    load = time.perf_counter() - start
    clear_memory_cache()
    size_mb = cache.cache_path(case.geometry).stat().st_size / 2**20
    return {"build s": build, "load s": load, "nnz": float(nnz), "file MB": size_mb}


def time_astra(case: Case, repeats: int) -> dict[str, float]:
    """astra-toolbox CPU FP / BP / FBP (ms), 'linear' (parallel) or 'line_fanflat' (fan) projector."""
    import astra

    g = case.geometry
    scale = 1.0 / g.pixel_spacing_mm  # astra works in pixel units
    volume = astra.create_vol_geom(g.image_size, g.image_size)
    if isinstance(g, ParallelBeamGeometry):
        proj_geom = astra.create_proj_geom("parallel", g.det_spacing_mm * scale, g.det_count, np.array(g.angles))
        projector_type = "linear"
    else:
        proj_geom = astra.create_proj_geom(
            "fanflat",
            g.det_spacing_mm * scale,
            g.det_count,
            np.array(g.angles),
            g.source_to_isocenter_mm * scale,
            (g.source_to_detector_mm - g.source_to_isocenter_mm) * scale,
        )
        projector_type = "line_fanflat"
    projector = astra.create_projector(projector_type, proj_geom, volume)
    rng = np.random.default_rng(0)
    volume_id = astra.data2d.create("-vol", volume, rng.random((g.image_size, g.image_size), dtype=np.float32))
    sinogram_id = astra.data2d.create("-sino", proj_geom, 0.0)
    algorithms = {}
    for name in ("FP", "BP") + (("FBP",) if isinstance(g, ParallelBeamGeometry) else ()):
        config = astra.astra_dict(name)
        config.update(ProjectorId=projector, ProjectionDataId=sinogram_id)
        config["VolumeDataId" if name == "FP" else "ReconstructionDataId"] = volume_id
        algorithms[name] = astra.algorithm.create(config)
    out: dict[str, float] = {}
    try:
        for label, name in (("forward", "FP"), ("adjoint", "BP"), ("fbp", "FBP")):
            if name not in algorithms:
                continue
            one = median_ms(lambda name=name: astra.algorithm.run(algorithms[name]), repeats, lambda: None)
            out[f"{label} B1"] = one

            def loop(name: str = name) -> None:
                for _ in range(16):
                    astra.algorithm.run(algorithms[name])

            out[f"{label} B16"] = median_ms(loop, max(1, repeats // 4), lambda: None)
    finally:
        for algorithm in algorithms.values():
            astra.algorithm.delete(algorithm)
        astra.data2d.delete([volume_id, sinogram_id])
        astra.projector.delete(projector)
    return out


def time_skimage(case: Case) -> dict[str, float]:
    """scikit-image radon / iradon (ms), parallel beam only, batch 1 (one timed run; batch 16 = 16 x)."""
    from skimage.transform import iradon, radon

    g = case.geometry
    degrees = np.degrees(np.array(g.angles))
    image = np.random.default_rng(0).random((g.image_size, g.image_size))
    sinogram = radon(image, degrees, circle=False)
    out = {
        "forward B1": median_ms(lambda: radon(image, degrees, circle=False), 1, lambda: None),
        "fbp B1": median_ms(lambda: iradon(sinogram, degrees, circle=False, filter_name="ramp"), 1, lambda: None),
    }
    out["forward B16"] = 16 * out["forward B1"]
    out["fbp B16"] = 16 * out["fbp B1"]
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render(rows: list[dict], builds: dict[str, dict[str, float]], args: argparse.Namespace, device_name: str) -> str:
    """Markdown report: machine, timing table, build/load table, targets."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()
    lines = [
        "# Projector benchmark",
        "",
        f"- date: {now}; command: `python benchmarks/operators.py {' '.join(args.argv)}`".rstrip(),
        f"- machine: {_cpu_model()}, {os.cpu_count()} logical CPUs; ours on {device_name}",
        f"- torch {torch.__version__}; torch threads per row below; astra-toolbox CPU and scikit-image single-threaded",
        f"- load average at start (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(the machine is shared: timings are noisy, medians of repeats)",
        "- times in ms, medians; B16 of astra = loop of 16 runs, B16 of skimage = 16 x B1 (one run);",
        "  astra: 'linear' (Joseph) projector for parallel, 'line_fanflat' for fan (its CPU FBP is parallel-only)",
        "",
        "| geometry | library | threads | fwd B1 | fwd B16 | adj B1 | adj B16 | FBP B1 | FBP B16 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        t = row["times"]
        lines.append(
            f"| {row['case']} | {row['library']} | {row['threads']} | "
            + " | ".join(_fmt(t.get(f"{op} B{b}")) for op in ("forward", "adjoint", "fbp") for b in BATCHES)
            + " |"
        )
    lines += ["", "| geometry | nnz(A) | cache file MB | cold build s | load from cache s |", "|---|---|---|---|---|"]
    for name, b in builds.items():
        lines.append(f"| {name} | {int(b['nnz']):,} | {b['file MB']:.0f} | {b['build s']:.2f} | {b['load s']:.2f} |")
    lines += ["", "## Targets", ""]
    for row in rows:
        if row["library"] != "resample_med" or row["case"] != "parallel 256^2 x 60":
            continue
        astra_row = next((r for r in rows if r["library"] == "astra CPU" and r["case"] == row["case"]), None)
        if astra_row is not None:
            ratio = astra_row["times"]["forward B1"] / row["times"]["forward B1"]
            ratio16 = astra_row["times"]["forward B16"] / row["times"]["forward B16"]
            ok = "met" if ratio >= TARGET_ASTRA_SPEEDUP else "NOT met"
            lines.append(
                f"- forward 256^2 x 60, {row['threads']} thread(s): {ratio:.1f}x faster than astra CPU at batch 1 "
                f"({ratio16:.1f}x at batch 16); target >= {TARGET_ASTRA_SPEEDUP:.0f}x: {ok}"
            )
    fan = builds.get("fan 512^2 x 180")
    if fan is not None:
        best = min(fan["build s"], fan["load s"])
        lines.append(
            f"- fan 512^2 x 180 operator: cold build {fan['build s']:.1f} s, load from cache {fan['load s']:.1f} s; "
            f"target < {TARGET_FAN_BUILD_S:.0f} s (built or loaded): "
            f"{'met' if best < TARGET_FAN_BUILD_S else 'NOT met'}"
        )
    for row in rows:
        if row["library"] == "resample_med" and row["case"] == "fan 512^2 x 180":
            fwd = row["times"]["forward B1"]
            lines.append(
                f"- fan 512^2 x 180 forward, {row['threads']} thread(s): {fwd:.1f} ms; target < "
                f"{TARGET_FAN_FORWARD_MS:.0f} ms: {'met' if fwd < TARGET_FAN_FORWARD_MS else 'NOT met'}"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="device for our operators (cpu or cuda)")
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()], help="torch threads")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (median)")
    parser.add_argument("--no-references", action="store_true", help="skip astra-toolbox and scikit-image")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this text")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Markdown file to write")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    device = torch.device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"

    cases = [case for case in CASES if args.only in case.name]
    builds, rows = {}, []
    with tempfile.TemporaryDirectory() as folder:
        os.environ[cache.CACHE_ENV_VAR] = folder  # an empty cache: builds are cold
        for case in cases:
            torch.set_num_threads(args.threads[0])
            builds[case.name] = time_build_and_load(case)
            print(case.name, builds[case.name], flush=True)
            for threads in args.threads:
                torch.set_num_threads(threads)
                times = time_ours(case, device, args.repeats)
                rows.append({"case": case.name, "library": "resample_med", "threads": threads, "times": times})
                print(rows[-1], flush=True)
            clear_memory_cache()
            if args.no_references:
                continue
            astra_times = time_astra(case, args.repeats)
            rows.append({"case": case.name, "library": "astra CPU", "threads": 1, "times": astra_times})
            print(rows[-1], flush=True)
            if isinstance(case.geometry, ParallelBeamGeometry):
                rows.append({"case": case.name, "library": "skimage", "threads": 1, "times": time_skimage(case)})
                print(rows[-1], flush=True)
    report = render(rows, builds, args, device_name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
