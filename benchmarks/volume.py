"""Whole-series reconstruction: slice mode vs volume mode on the held-out contiguous chest volume.

One command writes ``benchmarks/results/volume.md`` (tables), ``volume.json`` (every number) and
``docs/volume_coronal.png`` (coronal reformats of the contiguous slices at the first setting:
truth, slice-wise ReSample, volume-mode ReSample, 3-D TV, one window; only a run with spacing 1
writes it)::

    # the full evaluation (64-slice volume: slices 16-63 evaluated, 0-15 kept for tuning)
    python benchmarks/volume.py --n-slices 48 --spacings 1 2 3 \\
        --settings parallel:20 parallel:30 fan:20 fan:30
    # tune the z weights once on the tuning slices (writes resample_med/sampling/tuned.json)
    python benchmarks/volume.py --tune resample --settings parallel:20 fan:30
    python benchmarks/volume.py --tune tv --settings parallel:20 fan:30
    python benchmarks/volume.py --report-only        # tables again from volume.json

Data: ``../shared/dicom/nsclc_radiogenomics_val3d`` (64 contiguous 1 mm slices of a patient never
used for training), loaded with :func:`resample_med.io.load_series` and resampled to the model
grid with :func:`resample_med.io.iter_model_slices`; all metrics are on the model grid. Slices
``--tune-slices`` (default 0-15) are only used by ``--tune``; the evaluation takes ``--n-slices``
slices from ``--eval-start`` (default 16) on, every ``s``-th slice for spacing ``s`` (thicker
slices: fewer, farther apart; the run uses as many as fit). Measurements: independent simulation
(:mod:`resample_med.operators.fine_model`, not the reconstructing projector), Poisson noise with
``--photons`` per ray, noise per slice from ``(seed, slice)`` so both modes invert the same data.
Slice mode: :func:`resample_med.pipeline.reconstruct_slices`; volume mode:
:func:`resample_med.pipeline.reconstruct_slabs` with the tuned z weights, both with
``--batch-size`` slices per network call, timed in the same process one after the other.

Metrics (:mod:`resample_med.metrics`, window [-1000, 1000] HU): axial PSNR / SSIM per slice inside
the reconstruction circle; the same on coronal and sagittal reformats (every 8th row / column
through the central half of the grid, masked to the circle's chord); the z-derivative RMSE
``sqrt(mean((D_z recon - D_z truth)^2))`` in HU per mm inside the circle (lower = slices agree
with each other as the truth does).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resample_med import metrics
from resample_med.io import CTVolume, iter_model_slices, load_series
from resample_med.pipeline import (
    AcquisitionConfig,
    Measurements,
    VolumeMode,
    reconstruct_slabs,
    reconstruct_slices,
    simulate_model_slices,
)
from resample_med.pipeline.slabs import Z_WEIGHT_DEFAULTS
from resample_med.sampling import tuned

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "dicom" / "nsclc_radiogenomics_val3d"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "volume.md"
DEFAULT_FIGURE = REPO_ROOT / "docs" / "volume_coronal.png"
TUNE_GRIDS: dict[str, tuple[float, ...]] = {
    "resample": (0.0, 0.01, 0.03, 0.1, 0.3),
    "tv": (0.0, 0.25, 0.5, 1.0, 2.0),
}
"""Candidate z weights of ``--tune`` (0: slice mode, the reference each weight must beat)."""
TUNE_CONSTANTS = {"resample": "RESAMPLE_Z_WEIGHT", "tv": "TV_Z_WEIGHT"}
REFORMAT_STEP = 8
"""Every this many rows / columns of the central half is one coronal / sagittal reformat."""
FIGURE_WINDOW_HU = (-1000.0, 400.0)
"""Display window of the figure (all panels)."""
FIGURE_ZOOM = 3
"""Pixels per model-grid pixel in the figure."""
MODES = ("slice", "volume")


def parse_range(text: str) -> tuple[int, int]:
    start, stop = text.split(":")
    return int(start), int(stop)


def load_volume(path: Path) -> CTVolume:
    if not path.exists():
        sys.exit(f"benchmarks/volume.py: {path} not found (the held-out volume lives in ../shared/dicom)")
    return load_series(path)


def sub_volume(volume: CTVolume, indices: np.ndarray, spacing: int) -> CTVolume:
    """Slices ``indices`` (every ``spacing``-th of a contiguous run) as a volume with that slice spacing."""
    sz, sy, sx = volume.spacing_mm
    return CTVolume(
        hu=np.ascontiguousarray(volume.hu[indices]),
        spacing_mm=(sz * spacing, sy, sx),
        origin_mm=np.asarray(volume.slice_positions()[indices[0]], dtype=np.float64),
        direction=volume.direction,
        source={"format": "benchmark"},
    )


def reformat_scores(recon: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Mean PSNR / SSIM of coronal (``x-z``) and sagittal (``y-z``) reformats of ``(N, H, W)`` volumes."""
    n, h, w = truth.shape
    circle = metrics.circle_mask(h, w).numpy()
    out: dict[str, float] = {}
    for name, axis in (("coronal", 1), ("sagittal", 2)):
        psnr, ssim = [], []
        for k in range(h // 4, 3 * h // 4, REFORMAT_STEP):
            a = np.take(recon, k, axis=axis)
            b = np.take(truth, k, axis=axis)
            chord = circle[k] if axis == 1 else circle[:, k]
            mask = np.tile(chord, (n, 1))
            psnr.append(float(metrics.psnr(a[None], b[None], mask=mask)[0]))
            if n > metrics.SSIM_WINDOW_SIZE // 2:  # SSIM's window needs that many slices
                ssim.append(float(metrics.ssim(a[None], b[None], mask=mask)[0]))
        out[f"{name}_psnr"] = float(np.mean(psnr))
        out[f"{name}_ssim"] = float(np.mean(ssim)) if ssim else float("nan")
    return out


def z_derivative_rmse(recon: np.ndarray, truth: np.ndarray, slice_mm: float) -> float:
    """RMSE of ``D_z`` (HU per mm) inside the reconstruction circle."""
    circle = metrics.circle_mask(*truth.shape[1:]).numpy()
    d = (np.diff(recon, axis=0) - np.diff(truth, axis=0)) / slice_mm
    return float(np.sqrt(np.mean(d[:, circle] ** 2)))


def scores(recon: np.ndarray, truth: np.ndarray, slice_mm: float) -> dict[str, float]:
    return {
        "axial_psnr": float(np.mean(metrics.psnr(recon, truth))),
        "axial_ssim": float(np.mean(metrics.ssim(recon, truth))),
        **reformat_scores(recon, truth),
        "z_derivative_rmse": z_derivative_rmse(recon, truth, slice_mm),
    }


def run_mode(
    mode: str,
    measurements: Measurements,
    method: str,
    prior: Any,
    args: argparse.Namespace,
    slice_mm: float,
    z_weight: float | None = None,
) -> tuple[np.ndarray, float, dict[str, Any]]:
    """``(hu (N, H, W), seconds per slice, info)`` of one reconstruction."""
    config = args.preset if method == "resample" else "fast"
    started = time.perf_counter()
    if mode == "slice":
        rec = reconstruct_slices(measurements, method, prior, config, batch_size=args.batch_size, seed=args.seed)
    else:
        volume_mode = VolumeMode(
            z_weight=z_weight,
            slab_slices=args.slab_slices,
            overlap=args.overlap,
            slice_spacing_mm=slice_mm,
        )
        rec = reconstruct_slabs(
            measurements, method, prior, config, mode=volume_mode, batch_size=args.batch_size, seed=args.seed
        )
    seconds = (time.perf_counter() - started) / measurements.n_slices
    return rec.hu, seconds, rec.info


def model_grid(volume: CTVolume, size: int) -> tuple[list[Any], np.ndarray]:
    model_slices = list(iter_model_slices(volume, size=size))
    return model_slices, np.stack([np.asarray(s.hu, dtype=np.float32) for s in model_slices])


def acquisition(setting: str, args: argparse.Namespace) -> AcquisitionConfig:
    geometry, views = setting.split(":")
    return AcquisitionConfig(geometry=geometry, n_views=int(views), photons=args.photons, simulation="independent")


def load_prior(args: argparse.Namespace) -> Any:
    from resample_med.models import LatentDiffusionBundle, load_default_model

    return load_default_model(device="cpu") if args.model == "default" else LatentDiffusionBundle.load(args.model)


def evaluate(args: argparse.Namespace) -> None:
    volume = load_volume(args.data)
    prior = load_prior(args)
    args.image_size = int(prior.image_size)
    records: list[dict[str, Any]] = json.loads(args.json.read_text()) if args.resume and args.json.exists() else []
    done = {(r["spacing"], r["setting"], r["method"], r["mode"]) for r in records}
    figure: dict[str, np.ndarray] = {}
    for spacing in args.spacings:
        available = np.arange(args.eval_start, volume.n_slices, spacing)
        indices = available[: args.n_slices]
        sub = sub_volume(volume, indices, spacing)
        model_slices, truth = model_grid(sub, prior.image_size)
        slice_mm = float(sub.spacing_mm[0])
        for setting in args.settings:
            measurements = simulate_model_slices(model_slices, acquisition(setting, args), args.seed)
            for method in args.methods:
                for mode in MODES:
                    key = (spacing, setting, method, mode)
                    if key in done:
                        continue
                    hu, seconds, info = run_mode(mode, measurements, method, prior, args, slice_mm)
                    if spacing == 1 and setting == args.settings[0]:
                        figure[f"{method} {mode}"] = hu
                    record = {
                        "spacing": spacing,
                        "setting": setting,
                        "method": method,
                        "mode": mode,
                        "slices": [int(i) for i in indices],
                        "slice_mm": slice_mm,
                        "seconds_per_slice": seconds,
                        **scores(hu, truth, slice_mm),
                        "z_weight": info.get("volume_mode", {}).get("z_weight_used"),
                    }
                    records.append(record)
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(records, indent=1))
                    print(json.dumps(record), flush=True)
        if spacing == 1 and figure:
            make_figure(args.figure, truth, figure, slice_mm, float(model_slices[0].pixel_spacing_mm))
    write_report(records, args)


def make_figure(path: Path, truth: np.ndarray, recons: dict[str, np.ndarray], slice_mm: float, pixel_mm: float) -> None:
    """Coronal reformats through the grid centre, one above the other, one window, z stretched to
    true proportions, everything enlarged ``FIGURE_ZOOM`` times (nearest neighbour: slices stay visible)."""
    from PIL import Image, ImageDraw

    panels = [("truth", truth)] + [
        (label, recons[key])
        for key, label in (
            ("resample slice", "ReSample, slice by slice"),
            ("resample volume", "ReSample, volume mode"),
            ("tv volume", "3-D TV (volume mode)"),
        )
        if key in recons
    ]
    row = truth.shape[1] // 2
    lo, hi = FIGURE_WINDOW_HU
    width = truth.shape[2] * FIGURE_ZOOM
    height = max(1, int(round(truth.shape[0] * slice_mm / pixel_mm * FIGURE_ZOOM)))
    header = 16
    canvas = Image.new("L", (width, len(panels) * (header + height)), color=255)
    draw = ImageDraw.Draw(canvas)
    for r, (name, stack) in enumerate(panels):
        coronal = stack[::-1, row, :]  # head up
        gray = (np.clip((coronal - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
        tile = Image.fromarray(gray).resize((width, height), Image.NEAREST)
        top = r * (header + height)
        canvas.paste(tile, (0, top + header))
        draw.text((4, top + 2), name, fill=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def write_report(records: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """``volume.md``: one table per spacing and setting, then the cost table."""
    lines = [
        "# Whole-series reconstruction: slice mode vs volume mode",
        "",
        f"- **Date:** {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {platform.node()}: {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- **Command:** `python benchmarks/volume.py {shlex.join(sys.argv[1:])}`",
        f"- **Data:** `{args.data.name}` (64 contiguous 1 mm chest slices, patient never used for training), "
        f"model grid {args.image_size}x{args.image_size}; evaluated slices from {args.eval_start} on "
        f"(slices {args.tune_slices} are kept for tuning), at most {args.n_slices} per spacing",
        f"- **Acquisition:** independent simulation (fine grid, not the reconstructing projector), Poisson "
        f"I0 = {args.photons:g}; ReSample preset `{args.preset}`, TV preset `fast`; batch {args.batch_size}; "
        f"volume mode: slabs of {args.slab_slices} slices overlapping by {args.overlap}, "
        f"z weights (for 1 mm slices, scaled to the spacing) {', '.join(f'{m} {w:g}' for m, w in sorted(Z_WEIGHT_DEFAULTS.items()) if m in args.methods)}",
        "",
        "Metrics on the model grid, window [-1000, 1000] HU, inside the reconstruction circle: axial "
        "PSNR / SSIM per slice (mean); coronal and sagittal: the same on reformats (every 8th row / "
        "column of the central half); z-der RMSE: RMSE of the z derivative against the truth's in HU/mm "
        "(lower: neighbouring slices agree as in the truth). s/slice: wall time per slice, both modes "
        "timed in this run.",
        "",
    ]
    if args.reduced_note:
        lines += [f"**Reduced run:** {args.reduced_note}", ""]
    header = (
        "| method | mode | axial PSNR | axial SSIM | coronal PSNR | coronal SSIM | sagittal PSNR | "
        "sagittal SSIM | z-der RMSE (HU/mm) | s/slice |"
    )
    for spacing in sorted({r["spacing"] for r in records}):
        for setting in [s for s in dict.fromkeys(r["setting"] for r in records)]:
            rows = [r for r in records if r["spacing"] == spacing and r["setting"] == setting]
            if not rows:
                continue
            geometry, views = setting.split(":")
            lines += [
                f"## {geometry}, {views} views, slice spacing {rows[0]['slice_mm']:g} mm "
                f"({len(rows[0]['slices'])} slices: {rows[0]['slices'][0]}..{rows[0]['slices'][-1]} "
                f"step {spacing})",
                "",
                header,
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in rows:
                lines.append(
                    f"| {r['method']} | {r['mode']} | {r['axial_psnr']:.2f} | {r['axial_ssim']:.3f} | "
                    f"{r['coronal_psnr']:.2f} | {r['coronal_ssim']:.3f} | {r['sagittal_psnr']:.2f} | "
                    f"{r['sagittal_ssim']:.3f} | {r['z_derivative_rmse']:.1f} | {r['seconds_per_slice']:.2f} |"
                )
            lines.append("")
    lines += [
        "## Gain of volume mode and its cost",
        "",
        "| spacing | setting | method | d axial PSNR | d coronal PSNR | d sagittal PSNR | z-der RMSE change | "
        "time volume / slice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r["mode"] != "volume":
            continue
        base = next(
            (
                b
                for b in records
                if b["mode"] == "slice" and all(b[k] == r[k] for k in ("spacing", "setting", "method"))
            ),
            None,
        )
        if base is None:
            continue
        lines.append(
            f"| {r['slice_mm']:g} mm | {r['setting']} | {r['method']} | "
            f"{r['axial_psnr'] - base['axial_psnr']:+.2f} | {r['coronal_psnr'] - base['coronal_psnr']:+.2f} | "
            f"{r['sagittal_psnr'] - base['sagittal_psnr']:+.2f} | "
            f"{100 * (r['z_derivative_rmse'] / base['z_derivative_rmse'] - 1):+.0f}% | "
            f"{r['seconds_per_slice'] / base['seconds_per_slice']:.2f}x |"
        )
    lines += [
        "",
        "## z weights",
        "",
        *(
            f"- `{constant}` = {Z_WEIGHT_DEFAULTS[method]:g}: {tuned.provenance(constant)}"
            for method, constant in TUNE_CONSTANTS.items()
        ),
        "",
        f"Figure: `docs/volume_coronal.png` (coronal reformat through the grid centre, every slice, first setting, "
        f"window [{FIGURE_WINDOW_HU[0]:g}, {FIGURE_WINDOW_HU[1]:g}] HU, z to scale).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


def tune(args: argparse.Namespace) -> None:
    """Pick the z weight of ``--tune`` maximising the mean of axial, coronal and sagittal PSNR on
    the tuning slices at every ``--settings``; store it in ``resample_med/sampling/tuned.json``."""
    method = args.tune
    volume = load_volume(args.data)
    prior = load_prior(args)
    start, stop = parse_range(args.tune_slices)
    sub = sub_volume(volume, np.arange(start, stop), 1)
    model_slices, truth = model_grid(sub, prior.image_size)
    totals: dict[float, list[float]] = {w: [] for w in TUNE_GRIDS[method]}
    for setting in args.settings:
        measurements = simulate_model_slices(model_slices, acquisition(setting, args), args.seed)
        for weight in TUNE_GRIDS[method]:
            hu, _, _ = run_mode("volume", measurements, method, prior, args, float(sub.spacing_mm[0]), z_weight=weight)
            s = scores(hu, truth, float(sub.spacing_mm[0]))
            totals[weight].append((s["axial_psnr"] + s["coronal_psnr"] + s["sagittal_psnr"]) / 3)
            print(
                f"[{setting}] {method} z_weight {weight:g}: mean PSNR {totals[weight][-1]:.2f} "
                f"(z-der RMSE {s['z_derivative_rmse']:.1f})",
                flush=True,
            )
    best = max(totals, key=lambda w: np.mean(totals[w]))
    constant = TUNE_CONSTANTS[method]
    provenance = (
        f"benchmarks/volume.py --tune {method} on {dt.date.today()}: grid {list(TUNE_GRIDS[method])}, best "
        f"mean axial/coronal/sagittal PSNR {np.mean(totals[best]):.2f} dB on slices {args.tune_slices} of "
        f"{args.data.name} at {args.settings}, I0 = {args.photons:g}, "
        f"{'the slices as one slab' if stop - start <= args.slab_slices else f'slabs {args.slab_slices}/{args.overlap}'}"
    )
    tuned.store(constant, best, provenance)
    print(f"{constant} = {best:g} written to {tuned.TUNED_FILE}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", default="default", help="'default' or a bundle folder")
    p.add_argument("--methods", nargs="+", default=["resample", "tv"], choices=sorted(TUNE_GRIDS))
    p.add_argument("--preset", default="fast", help="ReSample preset")
    p.add_argument(
        "--settings", nargs="+", default=["parallel:20", "parallel:30", "fan:20", "fan:30"], help="geometry:views"
    )
    p.add_argument("--photons", type=float, default=1e5)
    p.add_argument("--spacings", nargs="+", type=int, default=[1, 2, 3], help="use every s-th slice")
    p.add_argument("--eval-start", type=int, default=16, help="first evaluated slice (slices before it tune)")
    p.add_argument("--n-slices", type=int, default=48, help="slices per spacing (at most)")
    p.add_argument("--tune-slices", default="0:16", help="START:STOP of the slices --tune uses")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--slab-slices", type=int, default=VolumeMode().slab_slices)
    p.add_argument("--overlap", type=int, default=VolumeMode().overlap)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tune", choices=sorted(TUNE_GRIDS))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--json", type=Path, default=DEFAULT_OUT.with_suffix(".json"))
    p.add_argument("--figure", type=Path, default=DEFAULT_FIGURE)
    p.add_argument("--resume", action="store_true", help="keep the records already in --json, run the rest")
    p.add_argument("--reduced-note", default="", help="say in the report how this run is reduced")
    p.add_argument("--report-only", action="store_true", help="only render --out from the records in --json")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tune:
        tune(args)
    elif args.report_only:
        args.image_size = int(load_prior(args).image_size)
        write_report(json.loads(args.json.read_text()), args)
    else:
        evaluate(args)


if __name__ == "__main__":
    main()
