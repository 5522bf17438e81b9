"""The ``resample-med`` command line: ``demo | reconstruct | simulate | evaluate | cache | train``.

Every subcommand calls the same engine as the napari plugin and the Python API
(:mod:`resample_med.pipeline`). Exit codes: 0 success; 1 some series of a folder of studies
failed (the others were reconstructed); 2 unusable input or configuration (the message names the
file and the problem); 130 interrupted by Ctrl-C (finished slices are kept; rerun to resume).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from resample_med import __version__
from resample_med.cli import cache, common, demo, evaluate, reconstruct, simulate

TRAIN_COMMAND = "train"

RESUME_HINT = "; finished slices are kept, run the same command again to resume (--overwrite starts over)"


def input_errors() -> tuple[type[Exception], ...]:
    """Errors reported as one line and exit code 2 (imported when a command runs, not for ``--help``)."""
    from resample_med.config import ConfigError
    from resample_med.io.errors import DicomInputError, OutputPathError
    from resample_med.pipeline.checkpoint import CheckpointMismatchError
    from resample_med.pipeline.sinogram_file import SinogramFileError

    return (
        DicomInputError,
        OutputPathError,
        SinogramFileError,
        ConfigError,
        CheckpointMismatchError,
        FileNotFoundError,
    )


def build_parser(with_train: bool = True) -> argparse.ArgumentParser:
    """The argument parser with every subcommand.

    ``with_train=False`` registers ``train`` as a stub that takes any arguments: the training
    parser lists the training presets, which imports torch and diffusers, so :func:`main` builds it
    only when the command is ``train``.
    """
    parser = argparse.ArgumentParser(
        prog="resample-med",
        description=common.plain_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"resample-med {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(subparsers)
    reconstruct.add_parser(subparsers)
    simulate.add_parser(subparsers)
    evaluate.add_parser(subparsers)
    cache.add_parser(subparsers)
    if with_train:
        from resample_med.training.cli import add_train_parser

        add_train_parser(subparsers)
    else:
        subparsers.add_parser(TRAIN_COMMAND, help="train the latent diffusion prior on CT slices", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand and return its exit code."""
    parser = build_parser(with_train=False)
    args, extra = parser.parse_known_args(argv)
    if args.command == TRAIN_COMMAND:
        parser = build_parser(with_train=True)
        args, extra = parser.parse_known_args(argv)
    if args.command == evaluate.COMMAND:
        args.harness_args = extra  # everything after `evaluate` belongs to the harness
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler = getattr(args, "handler", None) or args.func
    try:
        result = handler(args)
    except input_errors() as err:
        print(f"resample-med {args.command}: error: {err}", file=sys.stderr)
        return common.EXIT_BAD_INPUT
    except KeyboardInterrupt:
        hint = RESUME_HINT if args.command == "reconstruct" else ""
        print(f"\nresample-med {args.command}: interrupted{hint}", file=sys.stderr)
        return common.EXIT_INTERRUPTED
    return result if isinstance(result, int) else common.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
