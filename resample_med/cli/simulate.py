"""``resample-med simulate INPUT OUTPUT.npz``: simulated sparse-view measurements of a CT, for experiments.

Every slice of the chosen series (or ``--slices START:STOP``) is resampled to the model grid and
measured with the acquisition options, the noise of each slice drawn from the seed exactly as
``reconstruct`` (with the same ``--slices``) draws it. The sinogram file (:mod:`resample_med.pipeline.sinogram_file`)
holds the data, the geometry and the model-grid ground truth, so ``resample-med reconstruct
OUTPUT.npz DIR`` reports metrics. ``--simulation independent`` computes the data with a finer
model than the reconstruction's (no inverse crime, :mod:`resample_med.operators.fine_model`).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from resample_med.cli import common
from resample_med.cli.reconstruct import add_acquisition_arguments, config_from_args
from resample_med.pipeline.acquisition import SIMULATION_KINDS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``simulate``."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate sparse-view measurements of a CT into a sinogram file",
        description=common.plain_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="DICOM folder or file, or NIfTI file")
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="sinogram file to write (.npz, or .npy + .json)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML or JSON config (its acquisition is used)")
    parser.add_argument("--series", metavar="UID|NUMBER", help="series: SeriesInstanceUID or SeriesNumber")
    parser.add_argument("--series-description", metavar="TEXT", help="series: the one whose description contains TEXT")
    parser.add_argument("--slices", metavar="START:STOP", help="slice range (default: all)")
    parser.add_argument("--size", type=int, help="model grid side (default 256, the shipped prior's)")
    parser.add_argument("--seed", type=int, help="noise seed (default 0)")
    add_acquisition_arguments(parser)
    parser.add_argument(
        "--simulation",
        choices=SIMULATION_KINDS,
        help="matched: the reconstruction's own projector (the default; the inverse crime); "
        "independent: a 2x finer grid with detector-bin integration, same scanner",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Simulate and write the sinogram file; returns the exit code."""
    from resample_med.geometry import DEFAULT_IMAGE_SIZE
    from resample_med.io import iter_model_slices, load_volume
    from resample_med.pipeline import save_measurements
    from resample_med.pipeline.volume import simulate_model_slices

    config = config_from_args(args)
    if args.simulation is not None:
        config = dataclasses.replace(config, acquisition=config.acquisition.replace(simulation=args.simulation))
    volume = load_volume(args.input, args.series, description=args.series_description)
    if args.slices is not None:
        volume = common.crop_to_slices(volume, args.slices, args.input)
    measurements = simulate_model_slices(
        list(iter_model_slices(volume, size=args.size or DEFAULT_IMAGE_SIZE)),
        config.acquisition,
        config.reconstruction.seed,
    )
    path = save_measurements(args.output, measurements)
    print(
        f"wrote {path}: {measurements.n_slices} slice(s), sinogram {tuple(measurements.sinogram.shape[1:])}, "
        f"{config.acquisition.geometry} beam, {config.acquisition.n_views} views, "
        f"{config.acquisition.simulation} simulation"
    )
    return common.EXIT_OK
