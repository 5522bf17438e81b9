"""``resample-med reconstruct ... --executor ray``: the same reconstruction, spread over a Ray cluster.

The options below are added to ``reconstruct``; with the default ``--executor local`` nothing
changes. With ``--executor ray`` the run goes through
:func:`resample_med.pipeline.reconstruct_studies` (one task per slice chunk of each series, one
worker per GPU or CPU that keeps the prior loaded, bounded retries, one aggregated report.json).
OUTPUT (and INPUT) must be at the same path on every node.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm

from resample_med.cli import common
from resample_med.pipeline.studies import (
    AGGREGATE_REPORT,
    DEFAULT_CHUNK_SLICES,
    DEFAULT_MAX_RETRIES,
    EXECUTORS,
    SharedStorageError,
    reconstruct_studies,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--executor`` options of ``reconstruct``."""
    group = parser.add_argument_group('many studies on a cluster (pip install "resample-med[cluster]")')
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: this process (default); ray: a Ray cluster (OUTPUT on a file system every node sees)",
    )
    group.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster to join: auto | ray://HOST:PORT (default: start Ray on this machine)",
    )
    group.add_argument(
        "--gpus-per-task",
        type=float,
        metavar="N",
        help="GPUs per Ray worker (default 1 if the cluster has GPUs, else 0: CPU workers)",
    )
    group.add_argument(
        "--cpus-per-worker",
        type=int,
        default=1,
        metavar="N",
        help="CPUs (torch threads) of each Ray worker (default 1; pixels equal a serial run with as many threads)",
    )
    group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="Ray workers to start (default: one per GPU, or one per CPU without GPUs)",
    )
    group.add_argument(
        "--chunk-slices",
        type=int,
        default=DEFAULT_CHUNK_SLICES,
        metavar="N",
        help=f"slices per Ray task, rounded up to a multiple of --batch-size (default {DEFAULT_CHUNK_SLICES})",
    )
    group.add_argument(
        "--max-retries",
        type=int,
        default=DEFAULT_MAX_RETRIES,
        metavar="N",
        help=f"retries of a failed Ray task before its series is reported failed (default {DEFAULT_MAX_RETRIES})",
    )


RAY_ONLY_OPTIONS = ("address", "gpus_per_task", "workers")
"""Options that only mean something with ``--executor ray``."""


def wanted(args: argparse.Namespace) -> bool:
    """Whether this ``reconstruct`` runs through :func:`run` (``--executor ray``).

    Raises:
        ConfigError: a Ray-only option was given without ``--executor ray``.
    """
    if args.executor == "local" or args.list_series or args.dry_run:
        given = [f"--{name.replace('_', '-')}" for name in RAY_ONLY_OPTIONS if getattr(args, name) is not None]
        if given and args.executor == "local":
            raise common.ConfigError(f"{', '.join(given)} only apply with --executor ray")
        return False  # --list-series and --dry-run read headers only: the serial command answers them
    if getattr(args, "volume_mode", None):
        # the Ray chunks are whole batches of slices, not overlapping slabs: volume mode would silently
        # fall back to slice mode there
        raise common.ConfigError(
            "--volume-mode is not available with --executor ray yet; run it with the "
            "local executor (leave --executor out), or drop --volume-mode"
        )
    return True


def run(args: argparse.Namespace, config: Any) -> int:
    """``reconstruct --executor ray``: returns the exit code (0, 1 some series failed, 2 all failed)."""
    if args.executor == "ray":
        from resample_med.pipeline.ray_executor import import_ray

        import_ray()  # without Ray: one line, exit 2, before anything else is printed
    bar = tqdm(desc="slices", unit="slice", total=0)

    def on_event(event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "planned":
            bar.total += event["n_slices"]
            bar.update(event["resumed"])
        elif kind == "chunk_done":
            bar.update(event["computed"])
        elif kind == "series_failed":
            tqdm.write(f"error: {event['series']}: {event['error']}", file=sys.stderr)
        elif kind in ("retry", "worker_lost"):
            tqdm.write(
                f"warning: {event['series'] or 'worker'}: {kind.replace('_', ' ')}: {event['error']}", file=sys.stderr
            )

    try:
        report = reconstruct_studies(
            args.input,
            args.output,
            config,
            executor=args.executor,
            address=args.address,
            workers=args.workers,
            gpus_per_task=args.gpus_per_task,
            cpus_per_worker=args.cpus_per_worker,
            chunk_slices=args.chunk_slices,
            max_retries=args.max_retries,
            series=args.series,
            series_description=args.series_description,
            all_series=args.all_series,
            slices=args.slices,
            skip_bad_slices=args.skip_bad_slices,
            fill_nonfinite=args.fill_nonfinite,
            overwrite=args.overwrite,
            on_event=on_event,
        )
    except SharedStorageError as err:
        raise common.ConfigError(str(err)) from err
    finally:
        bar.close()
    counts, total = report["counts"], len(report["series"])
    where = args.output / AGGREGATE_REPORT
    tqdm.write(
        f"{counts['done'] + counts['skipped']} of {total} series reconstructed "
        f"({counts['skipped']} already done, {counts['failed']} failed); report in {where}"
    )
    if not counts["failed"]:
        return common.EXIT_OK
    return common.EXIT_BAD_INPUT if counts["failed"] == total else common.EXIT_PARTIAL
