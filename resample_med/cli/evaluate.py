"""``resample-med evaluate [ARGS...]``: the evaluation harness, ``benchmarks/evaluate.py``.

The harness is a script of the source tree (it writes tables and figures under ``benchmarks/``);
this command runs its ``main(argv)`` with the remaining arguments, so
``resample-med evaluate --help`` shows the harness's own options.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from resample_med.cli import common

COMMAND = "evaluate"
HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "evaluate.py"
"""Where the harness lives in a source checkout."""
HARNESS_MODULE = "resample_med_evaluate_harness"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate``; :func:`resample_med.cli.main` hands every following argument to the harness."""
    parser = subparsers.add_parser(COMMAND, help="run the evaluation harness (benchmarks/evaluate.py)",
                                   description=common.plain_help(__doc__),
                                   formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Import the harness by path and run its ``main``; returns its exit code."""
    if not HARNESS.is_file():
        raise common.ConfigError(
            f"{HARNESS}: the evaluation harness is not here; it ships with the source checkout, not the wheel"
        )
    spec = importlib.util.spec_from_file_location(HARNESS_MODULE, HARNESS)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[HARNESS_MODULE] = module  # dataclasses in the script look their module up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    result = module.main(args.harness_args, prog=f"resample-med {COMMAND}")
    return result if isinstance(result, int) else common.EXIT_OK
