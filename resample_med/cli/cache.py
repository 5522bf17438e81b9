"""``resample-med cache info|clear``: the on-disk projector cache.

Projectors (system matrices) are built once per geometry and kept in $RESAMPLE_MED_CACHE (default
~/.cache/resample_med/operators); a fan-beam 512x512 geometry takes about 1.3 GB. The folder is
capped at $RESAMPLE_MED_CACHE_LIMIT_GB (default 5 GB): the least recently used files go first.
``info`` lists the folder, ``clear`` deletes every cache file (they are rebuilt when needed).
"""

from __future__ import annotations

import argparse
import datetime as dt

from resample_med.cli import common

ACTIONS = ("info", "clear")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``cache``."""
    parser = subparsers.add_parser(
        "cache",
        help="show or clear the on-disk projector cache",
        description=common.plain_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=ACTIONS, help="info: list the cache; clear: delete its files")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the cache listing or clear it; returns the exit code."""
    from resample_med.operators.cache import cache_info, clear_disk_cache

    try:
        info = cache_info()
    except ValueError as err:  # a bad $RESAMPLE_MED_CACHE_LIMIT_GB
        raise common.ConfigError(str(err)) from err
    if args.action == "clear":
        removed = clear_disk_cache()
        print(f"{info.folder}: deleted {len(removed)} file(s), {_size(sum(f.size_bytes for f in removed))} freed")
        return common.EXIT_OK
    print(
        f"{info.folder}: {len(info.files)} file(s), {_size(info.total_bytes)} of {_size(info.limit_bytes)} "
        f"(least recently used first)"
    )
    for entry in info.files:
        used = dt.datetime.fromtimestamp(entry.last_used).strftime("%Y-%m-%d %H:%M")
        print(f"  {_size(entry.size_bytes):>9}  last used {used}  {entry.path.name}")
    return common.EXIT_OK


def _size(n_bytes: int) -> str:
    """``1.3 GB`` style size (powers of 1000, as the cap is given)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"
