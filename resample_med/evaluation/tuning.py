"""Choose a baseline's knob once on spare validation slices and store it in the tuned-values file.

``python benchmarks/tune.py tv`` picks the TV weight, ``python benchmarks/tune.py latent_dps
--preset fast`` the Latent-DPS step size, each maximising the mean PSNR over ``--tune-slices``
split slices that are not in the ``--n-slices`` evaluation subset, at every ``--views`` x
``--geometries`` x ``--simulations`` setting. The winner and its provenance are written to
``resample_med/sampling/tuned.json`` through :func:`resample_med.sampling.tuned.store`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from resample_med.evaluation.data import evaluation_indices, load_split, simulate
from resample_med.evaluation.options import add_shared_options, parse_settings
from resample_med.evaluation.runner import load_prior, method_config, run_method
from resample_med.sampling import tuned
from resample_med.sampling.registry import needs_prior

STORE: Path = tuned.TUNED_FILE
"""Where :func:`tune` writes (the package's store)."""


@dataclass(frozen=True)
class Tunable:
    """One baseline knob chosen once on spare val slices and stored in the tuned-values file."""

    description: str
    grid: tuple[float, ...]
    """Candidate values."""
    entry: str
    """Name of its entry in ``tuned.json`` (and of the constant in :mod:`resample_med.sampling.tuned`)."""
    field_name: str
    """The config field it sets."""


TUNABLES: dict[str, Tunable] = {
    "tv": Tunable("TV weight", tuple(float(w) for w in np.logspace(-4, -1, 7)), "TV_WEIGHT", "weight"),
    "latent_dps": Tunable("Latent-DPS step size", (1.0, 3.0, 10.0, 30.0), "LATENT_DPS_FAST_STEP_SIZE", "step_size"),
}
"""``--tune`` choices: TV's weight (normalised problem) and Latent-DPS's step size (``--preset``)."""


def tune(args: argparse.Namespace) -> float:
    """Run ``args.tune``'s grid on the tuning slices, store the best value; returns it."""
    method, tunable = args.tune, TUNABLES[args.tune]
    prior = load_prior(args.model, args.device)[0] if needs_prior(method) else None
    hu_all, _ = load_split(args.data, args.split)
    eval_idx = set(evaluation_indices(len(hu_all), args.n_slices).tolist())
    spare = np.asarray([i for i in range(len(hu_all)) if i not in eval_idx] or list(range(len(hu_all))))
    tune_idx = spare[evaluation_indices(len(spare), args.tune_slices)]
    settings = parse_settings(args)
    scores: dict[float, list[float]] = {v: [] for v in tunable.grid}
    for setting in settings:
        measurements = simulate(
            hu_all,
            tune_idx,
            setting,
            photons=args.photons,
            pixel_spacing=args.pixel_spacing,
            seed=args.seed,
            device=args.device,
        )
        for value in tunable.grid:
            config = replace(method_config(method, args.preset, args.sampler), **{tunable.field_name: value})
            rec, _ = run_method(method, measurements, prior, config, batch_size=args.batch_size, seed=args.seed)
            scores[value].append(float(np.mean([r["psnr"] for r in rec.per_slice])))
            print(f"[{setting.label}] {tunable.description} {value:.2e}: PSNR {scores[value][-1]:.2f}", flush=True)
    best = max(scores, key=lambda v: np.mean(scores[v]))
    preset = f", preset {args.preset}" if needs_prior(method) else ""
    provenance = (
        f"{args.command} on {dt.date.today()}: grid {[f'{v:.1e}' for v in tunable.grid]}, "
        f"best mean PSNR {np.mean(scores[best]):.2f} dB over val slices {tune_idx.tolist()} at "
        f"{[s.label for s in settings]}, I0 = {args.photons:g}, seed {args.seed} "
        f"(noise and sampler streams per slice){preset}"
    )
    tuned.store(tunable.entry, best, provenance, path=STORE)
    print(f"{tunable.description} {best:.3g} written to {STORE}")
    return best


def add_tuning_options(p: argparse.ArgumentParser) -> None:
    """``--tune-slices``: how many spare slices the grid is scored on."""
    p.add_argument(
        "--tune-slices",
        type=int,
        default=6,
        help="spare slices of the split (outside the --n-slices evaluation subset) the tuning chooses on",
    )


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """Options of ``benchmarks/tune.py``."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "tune",
        choices=sorted(TUNABLES),
        metavar="METHOD",
        help=f"the knob to choose: {', '.join(f'{k} ({t.description})' for k, t in TUNABLES.items())}",
    )
    add_tuning_options(p)
    add_shared_options(p)
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """``python benchmarks/tune.py METHOD [options]``."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(prog).parse_args(argv)
    args.command = f"{prog or 'python benchmarks/tune.py'} {shlex.join(argv)}"
    if args.threads:
        torch.set_num_threads(args.threads)
    tune(args)
