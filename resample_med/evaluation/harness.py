"""Quality and speed of every reconstruction method on the validation slices.

One command reproduces ``benchmarks/results/quality.md`` (tables) and ``quality_figure.png``:

    python benchmarks/evaluate.py                       # all 42 val slices, parallel+fan, 20/30/60 views
    python benchmarks/evaluate.py --simulations independent matched   # both simulations (below)
    python benchmarks/evaluate.py --preset fast --sampler warm_start=none --sampler warm_start_skip_fraction=0 \\
        --sampler posterior_samples=1   # a variant of a preset: any field of its config
    python benchmarks/evaluate.py --n-slices 8 --views 20 30 --preset fast
    python benchmarks/evaluate.py --merge runs/parallel runs/fan --out benchmarks/results
    python benchmarks/tune.py tv                        # choose the TV weight once (also: --tune tv here)

(``resample-med evaluate ARGS`` is the same command.) Measurements are simulated with
:func:`resample_med.pipeline.simulate_model_slices` (Poisson noise with ``--photons`` incident
photons per ray, post-log, each slice from its own noise stream keyed by its index in the split)
and every method runs through :func:`resample_med.pipeline.reconstruct_slices` (batches of
``--batch-size``, a sampler stream per slice) on the same ``y = A x + n`` with the per-ray noise
std and the 256^2 Joseph projector. ``--simulations`` chooses how the data are made:
``independent`` (default: a 2x finer bicubic grid with two sub-rays per detector bin, same
scanner; :mod:`resample_med.operators.fine_model`) and/or ``matched`` (the reconstructing projector
itself, the inverse crime); every table and JSON record names its simulation. A ReSample row
whose config draws several posterior samples (``fast``: 4) is the mean of them, and its std map is
scored in the uncertainty calibration section (per slice Spearman correlation of the std with the
absolute error and coverage of the +-2 std band, :func:`resample_med.metrics.uncertainty_calibration`).
With ``--uncertainty-samples`` > 1 and ``--calibration-slices``, ReSample is also run with that
many samples on that many slices per setting (the row ``resample_posterior``), and the figure's
std column comes from them when the ReSample rows have no std of their own.
Metrics (:mod:`resample_med.metrics`): PSNR and SSIM on the HU window [-1000, 1000] inside the
reconstruction circle, HU-RMSE in the circle, the relative sinogram residual ``||A x - y|| / ||y||``
and ``chi2/m = ||A x - y||^2 / sum sigma^2``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resample_med import metrics
from resample_med.evaluation import report, tuning
from resample_med.evaluation.data import (
    SIMULATION_TEXT,
    SOURCE_ROOT,
    Setting,
    evaluation_indices,
    load_split,
    simulate,
)
from resample_med.evaluation.options import add_shared_options, parse_settings
from resample_med.evaluation.runner import (
    ABLATIONS,
    BASE_METHODS,
    POSTERIOR_ROW,
    MethodResult,
    load_prior,
    machine_description,
    method_config,
    run_method,
    sampler_config,
    score,
)
from resample_med.sampling import tuned
from resample_med.sampling.baselines.tv import TVConfig
from resample_med.sampling.config import posterior_samples
from resample_med.sampling.registry import needs_prior

DEFAULT_OUT = (
    SOURCE_ROOT / "benchmarks" / "results" if (SOURCE_ROOT / "benchmarks").is_dir() else Path("evaluation_results")
)
"""``benchmarks/results`` of a source checkout; ``./evaluation_results`` for an installed package."""
FIGURE_METHODS = ("fbp", "tv", "latent_dps", "resample")
FIGURE_STD = "resample_std"
"""Key of ReSample's own std map in the figure data (when its rows are a posterior mean)."""
"""Columns of the figure, in order."""
SEEDING_NOTE = (
    "random draws come from the pipeline's per-slice streams (resample_med.pipeline.seeding): noise keyed "
    "by the slice's index in the split, sampler draws by its position among the evaluated slices; runs "
    "before 2026-12-01 drew one noise stream per setting over the whole split and one sampler stream per "
    "batch, so their numbers differ at the same --seed"
)
"""Note of every report on how randomness is drawn (and why older reports differ at the same seed)."""


def evaluate(args: argparse.Namespace) -> None:
    """Every method at every setting on the ``--n-slices`` subset; writes ``--out``'s report after each setting."""
    hu_all, ids_all = load_split(args.data, args.split)
    idx = evaluation_indices(len(hu_all), args.n_slices)
    hu, ids = hu_all[idx], [ids_all[i] for i in idx]
    methods = list(args.methods) + (list(ABLATIONS) if args.ablations else [])
    prior, prior_text = (
        load_prior(args.model, args.device) if any(needs_prior(m) for m in methods) else (None, "not used")
    )
    started = time.perf_counter()
    context: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(torch.device(args.device)),
        "command": args.command,
        "data": f"`{args.data.name}` split `{args.split}`, {len(idx)} of {len(hu_all)} slices "
        f"(val indices {idx.tolist()}), pixel spacing {args.pixel_spacing} mm assumed",
        "measurements": f"Poisson noise, I0 = {args.photons:g} photons/ray, post-log, linearised (seed {args.seed}); "
        f"simulation: {' and '.join(args.simulations)} ({SIMULATION_TEXT})",
        "simulations": list(args.simulations),
        "prior": prior_text,
        "preset": args.preset,
        "preset_config": asdict(sampler_config(args.preset, args.sampler)),
        "sampler_overrides": list(args.sampler),
        "resample_samples": posterior_samples(sampler_config(args.preset, args.sampler)),
        "tv_weight": f"{TVConfig().weight:g} ({tuned.provenance('TV_WEIGHT')})",
        "notes": [SEEDING_NOTE, *args.note],
    }
    results: dict[Setting, list[MethodResult]] = {}
    figure_data: dict[str, np.ndarray] = {}
    out_of_time = False
    for setting in parse_settings(args):
        if out_of_time:
            break
        measurements = simulate(
            hu_all,
            idx,
            setting,
            photons=args.photons,
            pixel_spacing=args.pixel_spacing,
            seed=args.seed,
            device=args.device,
        )
        rows: list[MethodResult] = []
        for method in methods:
            if args.budget_min and (time.perf_counter() - started) / 60 > args.budget_min:
                context["notes"].append(
                    f"time budget of {args.budget_min} min reached: {method} at {setting.label} "
                    "and everything after it were not run"
                )
                out_of_time = True
                break
            cfg = method_config(method, args.preset, args.sampler)
            rec, peak = run_method(method, measurements, prior, cfg, batch_size=args.batch_size, seed=args.seed)
            rows.append(score(method, cfg, rec, idx.tolist(), peak))
            if rec.std_hu is not None:  # a posterior mean (the config's posterior_samples): its std is scored too
                add_calibration(rows[-1], rec, measurements.reference_hu, posterior_samples(cfg))
            print(
                f"[{setting.label}] {method}: PSNR {np.mean(rows[-1].psnr):.2f} SSIM {np.mean(rows[-1].ssim):.3f} "
                f"{rows[-1].seconds_per_slice:.2f} s/slice",
                flush=True,
            )
            if setting == figure_setting(args) and method in FIGURE_METHODS:
                figure_data[method] = rec.hu[: args.figure_slices]
                if method == "resample" and rec.std_hu is not None:
                    figure_data[FIGURE_STD] = rec.std_hu[: args.figure_slices]
        if "resample" in methods and args.uncertainty_samples > 1 and args.calibration_slices and not out_of_time:
            rows.append(posterior_row(measurements, prior, idx, args))
        results[setting] = rows
        report.write_outputs(results, context, args.out)
        if figure_data and setting == figure_setting(args):
            add_figure(figure_data, hu, ids, measurements, prior, setting, args, context)
            report.write_outputs(results, context, args.out)
    print(f"wrote {args.out / 'quality.md'}")


def figure_setting(args: argparse.Namespace) -> Setting:
    """``--figure-setting`` under the first of ``--simulations``."""
    geometry, views = args.figure_setting
    return Setting(geometry, int(views), args.simulations[0])


def posterior_row(measurements: Any, prior: Any, idx: np.ndarray, args: argparse.Namespace) -> MethodResult:
    """ReSample with ``--uncertainty-samples`` posterior samples on ``--calibration-slices`` evenly
    spaced evaluated slices: the posterior mean's metrics and the std map's calibration per slice."""
    positions = evaluation_indices(len(idx), args.calibration_slices)
    cfg = method_config(POSTERIOR_ROW, args.preset, args.sampler)
    subset = measurements.select(positions.tolist())
    rec, peak = run_method(
        "resample", subset, prior, cfg, batch_size=args.batch_size, seed=args.seed, n_samples=args.uncertainty_samples
    )
    row = score(POSTERIOR_ROW, cfg, rec, idx[positions].tolist(), peak)
    add_calibration(row, rec, subset.reference_hu, args.uncertainty_samples)
    return row


def add_calibration(row: MethodResult, rec: Any, reference_hu: torch.Tensor, n_samples: int) -> None:
    """Put the per-slice calibration of ``rec``'s posterior std (``(N, H, W)`` HU, over ``n_samples``
    samples) against its error into ``row.extra`` (:func:`resample_med.metrics.uncertainty_calibration`)."""
    spearman, coverage = metrics.uncertainty_calibration(
        torch.from_numpy(rec.std_hu).double(), torch.from_numpy(rec.hu).double(), reference_hu.cpu().double()
    )
    row.extra = {"n_samples": n_samples, "spearman": spearman.tolist(), "coverage": coverage.tolist()}
    print(
        f"[{len(row.slices)} slices] {row.method}, posterior of {n_samples}: Spearman {np.nanmean(spearman):.2f} "
        f"coverage {np.mean(coverage):.3f}",
        flush=True,
    )


def add_figure(
    figure_data: dict[str, np.ndarray],
    hu: np.ndarray,
    ids: list[str],
    measurements: Any,
    prior: Any,
    setting: Setting,
    args: argparse.Namespace,
    context: dict[str, Any],
) -> None:
    """The figure of ``--figure-slices`` slices at the figure setting, with ReSample's std map: its
    own when its rows are a posterior mean, else from ``--uncertainty-samples`` posterior samples."""
    n = min(args.figure_slices, len(hu))
    std_hu = figure_data.get(FIGURE_STD)
    n_std = posterior_samples(method_config("resample", args.preset, args.sampler))
    if std_hu is None and prior is not None and args.uncertainty_samples > 1:
        n_std = args.uncertainty_samples
        cfg = method_config("resample", args.preset, args.sampler)
        rec, _ = run_method(
            "resample",
            measurements.select(list(range(n))),
            prior,
            cfg,
            batch_size=args.batch_size,
            seed=args.seed,
            n_samples=args.uncertainty_samples,
        )
        std_hu = rec.std_hu
    names = {"fbp": "FBP", "tv": "TV", "latent_dps": "Latent-DPS", "resample": "ReSample"}
    columns = [("ground truth", hu[:n])] + [(names[m], figure_data[m]) for m in FIGURE_METHODS if m in figure_data]
    path = args.out / "quality_figure.png"
    report.make_figure(path, columns, std_hu, ids[:n])
    context["figure"] = path.name
    context["figure_caption"] = (
        f"{setting.label}; window [-1000, 1000] HU; the last column is the per-pixel std of "
        f"{n_std} ReSample posterior samples "
        f"(0-{report.STD_DISPLAY_MAX_HU:.0f} HU)."
        if std_hu is not None
        else f"{setting.label}; window [-1000, 1000] HU."
    )


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The harness's options; ``prog`` names the command in usage lines (``resample-med evaluate``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--tune",
        choices=sorted(tuning.TUNABLES),
        help="instead of evaluating, choose the TV weight or the Latent-DPS step size (--preset) on "
        "spare val slices and store it (the same as benchmarks/tune.py METHOD)",
    )
    mode.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="combine the quality.json of runs split over processes into --out/quality.md",
    )
    add_shared_options(p)
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(BASE_METHODS),
        choices=list(BASE_METHODS) + list(ABLATIONS),
        help="reconstruction methods to compare",
    )
    p.add_argument("--ablations", action="store_true", help="also run the ReSample ablations")
    p.add_argument(
        "--figure-setting",
        nargs=2,
        default=["parallel", "30"],
        metavar=("GEOMETRY", "VIEWS"),
        type=lambda s: int(s) if s.isdigit() else s,
        help="the setting the figure shows",
    )
    p.add_argument("--figure-slices", type=int, default=3, help="slices shown in the figure")
    p.add_argument(
        "--uncertainty-samples",
        type=int,
        default=4,
        help="ReSample posterior samples for the figure's std map and the calibration rows (1: neither)",
    )
    p.add_argument(
        "--calibration-slices",
        type=int,
        default=8,
        help="evaluated slices (evenly spaced) with the posterior-mean row and uncertainty calibration (0: none)",
    )
    tuning.add_tuning_options(p)
    p.add_argument("--budget-min", type=float, default=None, help="stop starting new runs after this many minutes")
    p.add_argument("--note", action="append", default=[], help="a note to add to the report (repeatable)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of quality.md, quality.json and the figure")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Run the harness with ``argv`` (default ``sys.argv[1:]``); ``prog`` names it in usage lines
    and in the command recorded in the report (default ``python benchmarks/evaluate.py``)."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(prog).parse_args(argv)
    args.command = f"{prog or 'python benchmarks/evaluate.py'} {shlex.join(argv)}"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge:
        report.merge(args.merge, args.out, args.command, args.note)
    elif args.tune:
        tuning.tune(args)
    else:
        evaluate(args)
