"""Command-line options shared by the evaluation (``benchmarks/evaluate.py``, ``resample-med
evaluate``) and the tuning (``benchmarks/tune.py``): which slices, which settings, how the
methods run."""

from __future__ import annotations

import argparse
from pathlib import Path

from resample_med.evaluation.data import DEFAULT_DATA, SIMULATIONS, Setting
from resample_med.sampling import PRESETS


def add_shared_options(p: argparse.ArgumentParser) -> None:
    """Data, settings and run options (``--data`` ... ``--threads``)."""
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="npz of 256x256 HU slices with train/val splits (../shared/data/ct_hu256.npz)",
    )
    p.add_argument("--split", default="val", help="split of the npz to evaluate on")
    p.add_argument("--n-slices", type=int, default=None, help="evenly spaced subset of the split (default: all)")
    p.add_argument(
        "--geometries",
        nargs="+",
        default=["parallel", "fan"],
        choices=["parallel", "fan"],
        help="beam geometries to evaluate",
    )
    p.add_argument("--views", nargs="+", type=int, default=[20, 30, 60], help="numbers of projection views")
    p.add_argument("--photons", type=float, default=1e5, help="incident photons per ray (Poisson noise)")
    p.add_argument(
        "--simulations",
        nargs="+",
        default=[SIMULATIONS[0]],
        choices=SIMULATIONS,
        help="how data are simulated: independent (finer model, default) and/or matched (the inverse crime)",
    )
    p.add_argument(
        "--pixel-spacing", type=float, default=1.4, help="mm per pixel of the 256^2 grid (not stored in the npz)"
    )
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="sampler preset (ReSample, Latent-DPS)")
    p.add_argument(
        "--sampler",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the preset's ReSample config (repeatable), e.g. warm_start=none "
        "warm_start_skip_fraction=0 posterior_samples=1",
    )
    p.add_argument("--model", default="default", help="'default' (the shipped prior) or a bundle folder")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=8, help="slices reconstructed together")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of noise and sampling (each slice draws from its own stream of it)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 is far faster when other processes share the cores)",
    )


def parse_settings(args: argparse.Namespace) -> list[Setting]:
    """Every ``--simulations`` x ``--views`` x ``--geometries`` setting, in that nesting."""
    return [Setting(g, v, sim) for sim in args.simulations for v in args.views for g in args.geometries]
