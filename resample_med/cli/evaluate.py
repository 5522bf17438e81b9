"""``resample-med evaluate [ARGS...]``: the evaluation harness, :mod:`resample_med.evaluation.harness`.

This command runs the harness's ``main(argv)`` with the remaining arguments, so
``resample-med evaluate --help`` shows the harness's own options (``benchmarks/evaluate.py`` in a
source checkout is the same command).
"""

from __future__ import annotations

import argparse

from resample_med.cli import common

COMMAND = "evaluate"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate``; :func:`resample_med.cli.main` hands every following argument to the harness."""
    parser = subparsers.add_parser(
        COMMAND,
        help="run the evaluation harness (quality tables of every method)",
        description=common.plain_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the harness's ``main`` on ``args.harness_args``; returns the exit code."""
    from resample_med.evaluation import harness  # torch and the samplers load only when evaluating

    harness.main(args.harness_args, prog=f"resample-med {COMMAND}")
    return common.EXIT_OK
