"""``resample-med evaluate [ARGS...]``: the evaluation harness, ``benchmarks/evaluate.py``.

The harness is a script of the source tree (it writes tables and figures under ``benchmarks/``);
this command runs its ``main(argv)`` with the remaining arguments, so
``resample-med evaluate --help`` shows the harness's own options.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from resample_med.cli import common

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "evaluate.py"
"""Where the harness lives in a source checkout."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` (every following argument goes to the harness)."""
    parser = subparsers.add_parser("evaluate", help="run the evaluation harness (benchmarks/evaluate.py)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   add_help=False)
    parser.add_argument("harness_args", nargs=argparse.REMAINDER, help="arguments of benchmarks/evaluate.py")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Import the harness by path and run its ``main``; returns its exit code."""
    if not HARNESS.is_file():
        raise common.ConfigError(
            f"{HARNESS}: the evaluation harness is not here; it ships with the source checkout, not the wheel"
        )
    spec = importlib.util.spec_from_file_location("resample_med_evaluate_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    result = module.main(args.harness_args)
    return result if isinstance(result, int) else common.EXIT_OK
