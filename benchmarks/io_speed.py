"""Seconds to discover, load and iterate a DICOM folder (default: the 60-slice two-series folder).

    python benchmarks/io_speed.py [FOLDER] [--repeats N]

Prints the median wall-clock and CPU seconds of N runs (after one warm-up that also fills the OS
file cache; CPU time is the honest figure on a machine shared with other jobs) for:
discovering the series (headers only), loading the default series into a CTVolume, resampling
every slice of the loaded volume to the 256x256 model grid, and the slice-wise path iteration
(decode + resample one slice at a time, bounded memory).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from resample_med.io import discover_series, iter_model_slices, load_volume

DEFAULT_FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "dicom" / "lung_pet_ct_dx_two_series"


def _median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median wall-clock seconds, median CPU seconds of this process) over ``repeats`` calls."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    series = discover_series(args.folder)
    volume = load_volume(args.folder)
    n_files = sum(s.n_slices for s in series)
    print(
        f"{args.folder}: {len(series)} series, {n_files} files; "
        f"default series {volume.shape} {volume.source['TransferSyntax']}"
    )
    rows = {
        "discover (all headers)": _median_seconds(lambda: discover_series(args.folder), args.repeats),
        "load default series": _median_seconds(lambda: load_volume(args.folder), args.repeats),
        "iterate loaded volume -> 256^2": _median_seconds(lambda: list(iter_model_slices(volume)), args.repeats),
        "iterate from path (slice-wise)": _median_seconds(lambda: list(iter_model_slices(args.folder)), args.repeats),
    }
    print(f"{'':34s} {'wall s':>8s} {'CPU s':>8s}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:34s} {wall:8.3f} {cpu:8.3f}")


if __name__ == "__main__":
    main()
