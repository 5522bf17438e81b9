"""What moves ReSample's PSNR and SSIM: variants of the ``fast`` preset against tuned TV.

Run on the val slices that tuned the TV weight (not in the evaluation subset of
``benchmarks/evaluate.py --n-slices 8``), at one parallel and one fan setting, so that a
variant chosen from this table is not chosen on the slices it is reported on:

    python benchmarks/resample_variants.py                  # writes benchmarks/results/resample_variants.md
    python benchmarks/resample_variants.py --with-default   # also the 50-step `default` preset (slow on CPU)
    python benchmarks/resample_variants.py --only "as shipped|warm start" --settings parallel:30 fan:30 --append
                                                            # a subset of rows, appended as a new section

Data are simulated as in ``benchmarks/evaluate.py`` (``--simulation``: ``independent`` by default,
or ``matched``, the inverse crime; every table names it). Each row also counts the slices on which
it beats TV's PSNR and SSIM.
Each row is one sampler configuration; the "+ CGLS to tau" rows take the "final: none" output
(the decoded last latent) and fit it to the data by CGLS stopped at
``||A x - y||^2 <= tau * sum sigma^2``, i.e. a looser final data fit than the preset's tau = 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from resample_med import metrics
from resample_med.evaluation.data import DEFAULT_DATA, SIMULATION_TEXT, SIMULATIONS, Setting, load_split, simulate
from resample_med.evaluation.harness import DEFAULT_OUT
from resample_med.evaluation.runner import load_prior, machine_description
from resample_med.pipeline import LinearProblem, linearise
from resample_med.sampling import reconstruct
from resample_med.sampling.baselines.tv import TVConfig
from resample_med.sampling.config import DEFAULT, FAST, FAST_FROM_NOISE, ReSampleConfig
from resample_med.sampling.consistency import pixel_least_squares
from resample_med.sampling.linalg import discrepancy_threshold
from resample_med.sampling.refine import refine_mean
from resample_med.units import model_to_hu

TUNE_SLICES = (1, 14, 27, 40)
WARM_START_SKIPS = (0.3, 0.5, 0.7)
"""Warm-start skip fractions measured: steps 6, 10 and 14 of the 20-step ``fast`` grid (noise level from high to low)."""
"""The val slices ``evaluate.py --tune tv`` chose the TV weight on (and ``--tune latent_dps`` the DPS step)."""

BASE = "fast from noise, 1 sample"
"""Row label of :data:`FAST_FROM_NOISE`; its variants' labels start with it."""

SAMPLER_VARIANTS: dict[str, ReSampleConfig] = {
    "fast (as shipped)": FAST,
    f"fast without the warm start (from noise at step 0 of {FAST.num_steps})": replace(
        FAST, warm_start="none", warm_start_skip_fraction=0.0
    ),
    "fast with the final fit to the noise level (final tau = 1)": replace(FAST, final_tau=None),
    "fast without the anchored-TV refinement of the mean": replace(FAST, refine_tv_weight=0.0),
    f"fast with the refinement at TV's own weight ({TVConfig().weight:g})": replace(
        FAST, refine_tv_weight=TVConfig().weight
    ),
    "fast with the refinement's anchor weight 0.01 (closer to TV)": replace(FAST, refine_anchor_weight=0.01),
    "fast with the refinement's anchor weight 0.1 (closer to the mean)": replace(FAST, refine_anchor_weight=0.1),
    f"fast with a {TVConfig().max_iter}-iteration TV start (TV's own solve)": replace(
        FAST, warm_start_tv_iterations=TVConfig().max_iter
    ),
    "fast with 1 posterior sample": replace(FAST, posterior_samples=1),
    "fast with 4 posterior samples": replace(FAST, posterior_samples=4),
    "fast with 8 posterior samples": replace(FAST, posterior_samples=8),
    "fast with final tau = 8": replace(FAST, final_tau=8.0),
    BASE: FAST_FROM_NOISE,
    f"{BASE}, final: none": replace(FAST_FROM_NOISE, final_consistency="none"),
    f"{BASE}, final: latent, 30 Adam iterations": replace(
        FAST_FROM_NOISE, final_consistency="latent", final_max_iter=30
    ),
    f"{BASE}, tau = 2 at every pixel step": replace(FAST_FROM_NOISE, pixel=replace(FAST.pixel, tau=2.0)),
    f"{BASE}, sigma^2 (gamma) = 10": replace(FAST_FROM_NOISE, gamma=10.0),
    f"{BASE}, sigma^2 (gamma) = 160": replace(FAST_FROM_NOISE, gamma=160.0),
    f"{BASE}, 40 steps": replace(FAST_FROM_NOISE, num_steps=40),
    f"{BASE}, consistency at every step": replace(FAST_FROM_NOISE, schedule=replace(FAST.schedule, skip=1)),
    f"{BASE}, mean of 4 posterior samples": replace(FAST_FROM_NOISE, posterior_samples=4),
    f"{BASE}, final: none, mean of 4 posterior samples": replace(
        FAST_FROM_NOISE, final_consistency="none", posterior_samples=4
    ),
    **{
        f"{BASE}, warm start from TV at step {round(f * 20)} of 20": replace(
            FAST_FROM_NOISE, warm_start="tv", warm_start_skip_fraction=f
        )
        for f in WARM_START_SKIPS
    },
    f"{BASE}, warm start from FBP at step {round(WARM_START_SKIPS[1] * 20)} of 20": replace(
        FAST_FROM_NOISE, warm_start="fbp", warm_start_skip_fraction=WARM_START_SKIPS[1]
    ),
    f"{BASE}, final tau = 4": replace(FAST_FROM_NOISE, final_tau=4.0),
    f"{BASE}, warm start from TV at step 14 of 20, final tau = 4": replace(
        FAST_FROM_NOISE, warm_start="tv", warm_start_skip_fraction=0.7, final_tau=4.0
    ),
    f"{BASE}, warm start from TV at step 14 of 20, final: none": replace(
        FAST_FROM_NOISE, warm_start="tv", warm_start_skip_fraction=0.7, final_consistency="none"
    ),
}
"""Row label -> sampler config (its ``posterior_samples`` averaged)."""
LOOSE_FIT_TAUS = (2.0, 4.0)
REFINED_TV = "TV refined by fast's anchored TV (control: the refinement without the diffusion prior)"
"""Row label of the control: TV's image through ``fast``'s refinement (:mod:`resample_med.sampling.refine`)."""


Row = tuple[str, np.ndarray, np.ndarray, float]
"""``(label, per-slice PSNR, per-slice SSIM, seconds per slice)``."""


def _scores(images: torch.Tensor, ref_hu: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    hu = model_to_hu(images[:, 0].double())
    return metrics.psnr(hu, ref_hu), metrics.ssim(hu, ref_hu)


def _timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_setting(
    problem: LinearProblem, ref_hu: torch.Tensor, prior: object, with_default: bool, only: str | None = None
) -> list[Row]:
    """TV and every variant (whose label matches the regular expression ``only``, if given) on one setting."""
    n = problem.y.shape[0]

    def method(name: str, config: object) -> torch.Tensor:
        rec = reconstruct(
            name,
            problem.y,
            problem.operator,
            prior=prior,
            config=config,
            noise_std=problem.noise_std,
            generator=torch.Generator().manual_seed(0),
        )
        return rec.image

    rows = []
    images, sec = _timed(lambda: method("tv", None))
    rows.append(("TV (weight tuned on these slices)", *_scores(images, ref_hu), sec / n))
    if only is None or re.search(only, REFINED_TV):
        refined, sec = _timed(
            lambda: refine_mean(images, problem.y, problem.operator, FAST, generator=torch.Generator().manual_seed(0))
        )
        rows.append((REFINED_TV, *_scores(refined, ref_hu), float("nan")))
    variants = dict(SAMPLER_VARIANTS)
    if with_default:
        variants["default preset (50 steps, latent consistency)"] = DEFAULT
    if only is not None:
        variants = {label: v for label, v in variants.items() if re.search(only, label)}
    decoded = None
    for label, config in variants.items():
        images, sec = _timed(lambda: method("resample", config))
        rows.append((label, *_scores(images, ref_hu), sec / n))
        print(f"{label}: PSNR {rows[-1][1].mean():.2f} SSIM {rows[-1][2].mean():.3f} {sec / n:.1f} s/slice", flush=True)
        if label == f"{BASE}, final: none":
            decoded = images
    if decoded is None:  # the loose-fit rows start from the "final: none" output
        return rows
    for tau in LOOSE_FIT_TAUS:
        threshold = discrepancy_threshold(problem.y, problem.noise_std, tau)
        fitted, sec = _timed(
            lambda: pixel_least_squares(decoded, problem.y, problem.operator, replace(FAST.pixel, tau=tau), threshold)[
                0
            ]
        )
        rows.append((f"{BASE}, final: none + CGLS to tau = {tau:g}", *_scores(fitted, ref_hu), float("nan")))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--slices", nargs="+", type=int, default=list(TUNE_SLICES), help="val indices")
    p.add_argument("--settings", nargs="+", default=["parallel:30", "fan:20"], help="GEOMETRY:VIEWS")
    p.add_argument(
        "--simulation",
        default=SIMULATIONS[0],
        choices=SIMULATIONS,
        help="how the data are simulated (as benchmarks/evaluate.py --simulations)",
    )
    p.add_argument("--only", metavar="REGEX", help="run only the variants whose row label matches")
    p.add_argument("--append", action="store_true", help="append the tables as a new section of --out")
    p.add_argument("--photons", type=float, default=1e5)
    p.add_argument("--pixel-spacing", type=float, default=1.4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--with-default", action="store_true", help="also the `default` preset (minutes per slice on CPU)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "resample_variants.md")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    hu_all, _ = load_split(args.data, "val")
    idx = np.asarray(args.slices)
    prior, prior_text = load_prior("default", "cpu")
    title = (
        f"## Run of {dt.datetime.now(dt.timezone.utc):%Y-%m-%d}: {len(idx)} slices, {args.simulation} simulation"
        if args.append
        else "# ReSample variants against TV (choosing the sampler settings)"
    )
    lines = [
        title,
        "",
        f"- **Date:** {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- **Machine:** {machine_description(torch.device('cpu'))}",
        f"- **Command:** `python benchmarks/resample_variants.py {shlex.join(sys.argv[1:] if argv is None else argv)}`",
        f"- **Slices:** val {idx.tolist()} ({len(idx)} slices; {list(TUNE_SLICES)} are the TV-tuning slices), "
        f"I0 = {args.photons:g}, prior {prior_text}",
        f"- **Simulation:** {args.simulation} ({SIMULATION_TEXT})",
        "- PSNR / SSIM as in `quality.md` (HU window [-1000, 1000], reconstruction circle), mean over the slices; "
        "wins = slices on which the row beats TV; s/slice at batch = all slices (relative costs only).",
        "",
    ]
    heading = "###" if args.append else "##"
    previous = args.out.read_text().rstrip("\n") + "\n\n" if args.append and args.out.is_file() else ""
    for text in args.settings:
        geometry, views = text.split(":")
        setting = Setting(geometry, int(views), args.simulation)
        measurements = simulate(
            hu_all, idx, setting, photons=args.photons, pixel_spacing=args.pixel_spacing, seed=args.seed
        )
        problem, ref_hu = linearise(measurements), measurements.reference_hu
        lines += [
            f"{heading} {setting.label}",
            "",
            "| configuration | PSNR (dB) | SSIM | wins vs TV (PSNR / SSIM) | s/slice |",
            "|---|---|---|---|---|",
        ]
        rows = run_setting(problem, ref_hu, prior, args.with_default, args.only)
        _, tv_psnr, tv_ssim, _ = rows[0]
        for label, psnr, ssim, sec in rows:
            wins = (
                "-"
                if label.startswith("TV")
                else f"{int((psnr > tv_psnr).sum())}/{len(psnr)} / {int((ssim > tv_ssim).sum())}/{len(ssim)}"
            )
            lines.append(
                f"| {label} | {psnr.mean():.2f} | {ssim.mean():.3f} | {wins} | {'-' if np.isnan(sec) else f'{sec:.1f}'} |"
            )
        lines.append("")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(previous + "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
