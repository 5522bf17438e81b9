"""``resample-med simulate INPUT OUTPUT.npz``: simulated sparse-view measurements of a CT, for experiments.

Every slice of the chosen series (or ``--slices START:STOP``) is resampled to the model grid and
measured with the acquisition options, the noise of slice ``k`` drawn from the seed exactly as
``reconstruct`` would draw it. The sinogram file (:mod:`resample_med.pipeline.sinogram_file`)
holds the data, the geometry and the model-grid ground truth, so ``resample-med reconstruct
OUTPUT.npz DIR`` reports metrics.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resample_med.cli import common
from resample_med.cli.inputs import is_nifti
from resample_med.cli.reconstruct import add_acquisition_arguments, config_from_args
from resample_med.io import iter_model_slices, load_nifti, load_series
from resample_med.pipeline import save_measurements
from resample_med.pipeline.volume import DEFAULT_IMAGE_SIZE, simulate_model_slices


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``simulate``."""
    parser = subparsers.add_parser("simulate", help="simulate sparse-view measurements of a CT into a sinogram file",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, metavar="INPUT", help="DICOM folder or file, or NIfTI file")
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="sinogram file to write (.npz, or .npy + .json)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML or JSON config (its acquisition is used)")
    parser.add_argument("--series", metavar="SEL", help="series: SeriesInstanceUID, SeriesNumber or description")
    parser.add_argument("--slices", metavar="START:STOP", help="slice range (default: all)")
    parser.add_argument("--size", type=int, default=DEFAULT_IMAGE_SIZE, help="model grid side (default 256)")
    parser.add_argument("--seed", type=int, help="noise seed (default 0)")
    add_acquisition_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Simulate and write the sinogram file; returns the exit code."""
    config = config_from_args(args)
    volume = load_nifti(args.input) if is_nifti(args.input) else load_series(args.input, args.series)
    wanted = range(volume.n_slices)[_slice_range(args.slices)]
    chosen = [s for s in iter_model_slices(volume, size=args.size) if s.index in wanted]
    if not chosen:
        raise common.ConfigError(f"--slices {args.slices} selects no slice of {args.input} ({volume.n_slices} slices)")
    measurements = simulate_model_slices(chosen, config.acquisition, config.reconstruction.seed)
    path = save_measurements(args.output, measurements)
    print(f"wrote {path}: {measurements.n_slices} slice(s), sinogram {tuple(measurements.sinogram.shape[1:])}, "
          f"{config.acquisition.geometry} beam, {config.acquisition.n_views} views")
    return common.EXIT_OK


def _slice_range(text: str | None) -> slice:
    """``START:STOP`` (either may be empty) -> :class:`slice`."""
    if text is None:
        return slice(None)
    try:
        start, stop = (int(v) if v else None for v in text.split(":"))
    except ValueError as err:
        raise common.ConfigError(f"--slices {text!r}: expected START:STOP, e.g. 10:20") from err
    return slice(start, stop)
