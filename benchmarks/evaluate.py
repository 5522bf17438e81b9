"""Quality and speed of every reconstruction method on the validation slices.

One command reproduces ``benchmarks/results/quality.md`` (tables) and ``quality_figure.png``:

    python benchmarks/evaluate.py                       # all 42 val slices, parallel+fan, 20/30/60 views
    python benchmarks/evaluate.py --simulations independent matched   # both simulations (below)
    python benchmarks/evaluate.py --preset fast --sampler warm_start=tv --sampler warm_start_step=14 \
        --sampler final_tau=4 --resample-samples 4   # a candidate configuration, mean of 4 samples
    python benchmarks/evaluate.py --n-slices 8 --views 20 30 --preset fast
    python benchmarks/evaluate.py --tune tv             # choose the TV weight once, write it to the package
    python benchmarks/evaluate.py --tune latent_dps --preset fast   # the same for Latent-DPS's step size

Measurements are simulated with :func:`resample_med.pipeline.simulate_measurements` (Poisson
noise with ``--photons`` incident photons per ray, post-log) and linearised to model units with
:func:`resample_med.pipeline.linearise`; every method then solves the same ``y = A x + n`` with
the per-ray noise std and the 256^2 Joseph projector. ``--simulations`` chooses how the data are
made: ``independent`` (default: a 2x finer bicubic grid with two sub-rays per detector bin, same
scanner; :mod:`resample_med.operators.fine_model`) and/or ``matched`` (the reconstructing
projector itself, the inverse crime); every table and JSON record names its simulation. With
``--uncertainty-samples`` > 1, ReSample is also run with that many posterior samples on
``--calibration-slices`` slices per setting: the row ``resample_posterior`` (their mean) and the
uncertainty calibration section (per slice Spearman correlation of the std with the absolute
error and coverage of the +-2 std band, :func:`resample_med.metrics.uncertainty_calibration`). Metrics (:mod:`resample_med.metrics`): PSNR and SSIM
on the HU window [-1000, 1000] inside the reconstruction circle, HU-RMSE in the circle, the
relative sinogram residual ``||A x - y|| / ||y||`` and ``chi2/m = ||A x - y||^2 / sum sigma^2``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from resample_med import metrics
from resample_med.pipeline import AcquisitionConfig, LinearProblem, linearise, simulate_measurements
from resample_med.sampling import PRESETS, reconstruct, resolve_method_config
from resample_med.sampling.baselines.tv import TVConfig
from resample_med.units import model_to_hu

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "ct_hu256.npz"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
TUNED_FILE = REPO_ROOT / "resample_med" / "sampling" / "tuned.py"
PRIOR_METHODS = ("latent_dps", "resample", "resample_no_resampling", "resample_stochastic_encoding")
BASE_METHODS = ("fbp", "cgls", "tv", "latent_dps", "resample")
ABLATIONS = ("resample_no_resampling", "resample_stochastic_encoding")
RESAMPLE_ROWS = ("resample", *ABLATIONS)
"""Rows that are the mean of ``--resample-samples`` posterior samples."""
POSTERIOR_ROW = "resample_posterior"
"""Row of ReSample's posterior mean over ``--uncertainty-samples`` samples (with calibration figures)."""
SIMULATIONS = ("independent", "matched")
"""``--simulations`` choices, the default first (``AcquisitionConfig.simulation``)."""
FIGURE_METHODS = ("fbp", "tv", "latent_dps", "resample")
TV_GRID = tuple(float(w) for w in np.logspace(-4, -1, 7))
"""Candidate TV weights (normalised problem) for ``--tune tv``."""
DPS_STEP_GRID = (1.0, 3.0, 10.0, 30.0)
"""Candidate Latent-DPS step sizes for ``--tune latent_dps``."""
SIMULATION_TEXT = ("independent = a 2x finer bicubic grid projected with two sub-rays per detector bin and "
                   "intensity averaged per bin, same scanner; matched = the reconstructing projector itself (the inverse crime)")
STD_DISPLAY_MAX_HU = 200.0
"""Upper end of the uncertainty map's grey scale in the figure (HU)."""
MIB = 2**20


@dataclass(frozen=True)
class Setting:
    """One acquisition of the benchmark and how its data are simulated."""

    geometry: str
    n_views: int
    simulation: str = SIMULATIONS[0]

    @property
    def label(self) -> str:
        return f"{self.geometry}, {self.n_views} views, {self.simulation} simulation"

    @classmethod
    def from_label(cls, label: str) -> "Setting":
        """Inverse of :attr:`label`; labels of runs before simulations were named (``"fan, 20 views"``)
        are ``matched``, the only simulation there was."""
        parts = label.split(", ")
        simulation = parts[2].removesuffix(" simulation") if len(parts) > 2 else "matched"
        return cls(parts[0], int(parts[1].split()[0]), simulation)


@dataclass
class MethodResult:
    """Per-slice metrics of one method at one setting, and its cost."""

    method: str
    config: dict[str, Any]
    psnr: list[float]
    ssim: list[float]
    hu_rmse: list[float]
    rel_residual: list[float]
    chi2_per_ray: list[float]
    seconds_per_slice: float
    peak_memory_mib: float
    slices: list[int] = field(default_factory=list)
    """Val-split indices of the scored slices, in the order of the metric lists."""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# data and measurements


def load_split(path: Path, split: str) -> tuple[np.ndarray, list[str]]:
    """HU slices ``(N, 256, 256)`` float32 of ``split`` and their ``patient/source`` ids."""
    if not path.is_file():
        sys.exit(f"benchmarks/evaluate.py: data file {path} not found (it lives in ../shared/data)")
    data = np.load(path)
    idx = np.flatnonzero(data["split"] == split)
    ids = [f"{data['patient'][i]} ({data['anatomy'][i]})" for i in idx]
    return data["images_hu"][idx].astype(np.float32), ids


def evaluation_indices(n_total: int, n_slices: int | None) -> np.ndarray:
    """``n_slices`` evenly spaced indices (all when ``None``)."""
    if n_slices is None or n_slices >= n_total:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, n_slices).round().astype(int))


def simulate(hu: np.ndarray, setting: Setting, args: argparse.Namespace) -> tuple[LinearProblem, torch.Tensor]:
    """Linear problem and reference HU ``(N, H, W)`` of one setting (noise seeded per setting)."""
    acq = AcquisitionConfig(geometry=setting.geometry, n_views=setting.n_views, photons=args.photons,
                            simulation=setting.simulation)
    seed = args.seed + 1000 * setting.n_views + (0 if setting.geometry == "parallel" else 17)  # same for both simulations
    gen = torch.Generator(device="cpu").manual_seed(seed)
    m = simulate_measurements(hu, args.pixel_spacing, acq, generator=gen, device="cpu")
    problem = linearise(m)
    device = torch.device(args.device)
    if device.type != "cpu":
        from resample_med.pipeline.measurements import AttenuationOperator

        problem = LinearProblem(y=problem.y.to(device), noise_std=problem.noise_std.to(device),
                                operator=AttenuationOperator(m.projector.to(device), problem.operator.mu_water))
    return problem, m.reference_hu.cpu()


def restrict(problem: LinearProblem, indices: np.ndarray) -> LinearProblem:
    """The problem of the slices ``indices`` only (same operator)."""
    sel = torch.as_tensor(indices, device=problem.y.device)
    return replace(problem, y=problem.y[sel], noise_std=problem.noise_std[sel])


# --------------------------------------------------------------------------------------------
# running a method with its cost


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak on GPU, else the process's peak resident set
    (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``; ``ru_maxrss`` where that fails)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib = float("nan")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / MIB
            return
        status = Path("/proc/self/status")
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.is_file() else None
        self.peak_mib = int(match.group(1)) / 1024 if match else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_method(method: str, problem: LinearProblem, prior: Any, config: Any, args: argparse.Namespace,
               n_samples: int = 1, indices: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor | None, float, float, list]:
    """Reconstruct the slices ``indices`` of ``problem`` in batches of ``--batch-size``.

    Returns ``(images (N, 1, H, W) model units on CPU, std or None, seconds per slice,
    peak memory MiB, infos)``.
    """
    device = torch.device(args.device)
    idx = np.arange(problem.y.shape[0]) if indices is None else indices
    images, stds, infos = [], [], []
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        for b0 in range(0, len(idx), args.batch_size):
            sel = torch.as_tensor(idx[b0:b0 + args.batch_size])
            gen = torch.Generator(device=device).manual_seed(args.seed + b0)
            rec = reconstruct(method, problem.y[sel], problem.operator, prior=prior, config=config,
                              noise_std=problem.noise_std[sel], generator=gen, n_samples=n_samples)
            images.append(rec.image.detach().cpu())
            stds.append(None if rec.std is None else rec.std.detach().cpu())
            infos.append(rec.info)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    std = None if any(s is None for s in stds) else torch.cat(stds)
    return torch.cat(images), std, seconds / len(idx), mem.peak_mib, infos


def score(method: str, config: Any, images: torch.Tensor, problem: LinearProblem, ref_hu: torch.Tensor,
          seconds: float, peak: float, slices: np.ndarray) -> MethodResult:
    """Metrics of reconstructions ``images (N, 1, H, W)`` against ``ref_hu (N, H, W)``; ``slices``
    are their val-split indices."""
    hu = model_to_hu(images[:, 0].double())
    with torch.no_grad():
        pred = problem.operator.forward(images.to(problem.y.device)).cpu().double()
    y = problem.y.cpu().double()
    chi2 = ((pred - y) ** 2).flatten(1).sum(1) / (problem.noise_std.cpu().double() ** 2).flatten(1).sum(1)
    return MethodResult(
        method=method,
        config=asdict(config),
        psnr=metrics.psnr(hu, ref_hu).tolist(),
        ssim=metrics.ssim(hu, ref_hu).tolist(),
        hu_rmse=metrics.hu_rmse(hu, ref_hu).tolist(),
        rel_residual=metrics.relative_sinogram_residual(pred[:, 0], y[:, 0]).tolist(),
        chi2_per_ray=chi2.tolist(),
        seconds_per_slice=seconds,
        peak_memory_mib=peak,
        slices=[int(i) for i in slices],
    )


def load_prior(args: argparse.Namespace) -> tuple[Any, str]:
    """The prior (``--model``: ``default`` or a bundle folder) and a one-line description."""
    from resample_med.models import LatentDiffusionBundle, load_default_model
    from resample_med.models.bundle import DEFAULT_MODEL_DIR

    if args.model == "default":
        bundle, where = load_default_model(device=args.device), DEFAULT_MODEL_DIR
    else:
        bundle, where = LatentDiffusionBundle.load(args.model, device=args.device), Path(args.model)
    arch = bundle.config.architecture
    n_params = sum(p.numel() for p in bundle.parameters())
    return bundle, (f"`{where.relative_to(REPO_ROOT) if where.is_relative_to(REPO_ROOT) else where}` "
                    f"(architecture `{arch.name}`, {n_params / 1e6:.1f} M parameters, latent {bundle.latent_shape})")


def method_config(method: str, args: argparse.Namespace) -> Any:
    """The frozen config each method runs with (samplers: ``--preset``, ReSample and its ablations
    with the ``--sampler`` overrides; TV: its tuned default)."""
    if method == POSTERIOR_ROW:
        method = "resample"
    if method == "latent_dps":
        return resolve_method_config(method, args.preset)
    if method in PRIOR_METHODS:
        return sampler_config(args, resample_variant=method)
    return resolve_method_config(method, "default")


def sampler_config(args: argparse.Namespace, resample_variant: str = "resample") -> Any:
    """``--preset``'s ReSample config with the ``--sampler KEY=VALUE`` overrides (values read as YAML)."""
    config = resolve_method_config(resample_variant, args.preset)
    changes = {}
    for item in args.sampler:
        key, sep, value = item.partition("=")
        if not sep or key not in {f.name for f in fields(config)}:
            sys.exit(f"benchmarks/evaluate.py: --sampler {item!r} is not KEY=VALUE with KEY a ReSampleConfig field "
                     f"({', '.join(f.name for f in fields(config))})")
        changes[key] = yaml.safe_load(value)
    try:
        return replace(config, **changes)
    except (TypeError, ValueError) as err:
        sys.exit(f"benchmarks/evaluate.py: --sampler {' '.join(args.sampler)}: {err}")


# --------------------------------------------------------------------------------------------
# report and figure


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    text = f"{platform.node()}: {os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def _mean_std(values: list[float], fmt: str) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():{fmt}} ± {a.std(ddof=1) if a.size > 1 else 0.0:{fmt}}"


def format_report(results: dict[Setting, list[MethodResult]], context: dict[str, Any]) -> str:
    """The markdown report: context, one table per setting, ReSample's margins, notes."""
    lines = ["# Reconstruction quality on the validation slices", ""]
    lines += [f"- **Date:** {context['date']}", f"- **Machine:** {context['machine']}",
              f"- **Command:** `{context['command']}`", f"- **Data:** {context['data']}",
              f"- **Measurements:** {context['measurements']}", f"- **Prior:** {context['prior']}",
              f"- **Sampler preset:** `{context['preset']}`"
              + (f" with `{' '.join(context['sampler_overrides'])}`" if context.get("sampler_overrides") else "")
              + (f", ReSample rows the mean of {context['resample_samples']} posterior samples"
                 if context.get("resample_samples", 1) > 1 else "")
              + f" (`{json.dumps(context['preset_config'])}`)",
              f"- **TV weight:** {context['tv_weight']}", ""]
    lines += ["PSNR and SSIM on the HU window [-1000, 1000] (mapped to [0, 1]) inside the reconstruction circle; "
              "HU-RMSE inside the circle; residual = ||A x - y|| / ||y|| of the linearised data; chi2/m = "
              "||A x - y||^2 / sum sigma_i^2 (1 = fits to the noise level). Mean ± standard deviation over slices; "
              "seconds per slice with batches of `--batch-size` slices; peak memory = process peak RSS (CPU) or "
              "CUDA allocator peak (GPU) while the method ran.", ""]
    for setting, rows in results.items():
        if not rows:
            continue
        lines += [f"## {setting.label}", "",
                  "| method | slices | PSNR (dB) | SSIM | HU-RMSE | residual | chi2/m | s/slice | peak MiB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r.method} | {len(r.psnr)} | {_mean_std(r.psnr, '.2f')} | {_mean_std(r.ssim, '.3f')} | "
                         f"{_mean_std(r.hu_rmse, '.0f')} | {np.mean(r.rel_residual):.4f} | {np.mean(r.chi2_per_ray):.2f} | "
                         f"{r.seconds_per_slice:.2f} | {r.peak_memory_mib:.0f} |")
        lines.append("")
    lines += margins_section(results)
    lines += calibration_section(results)
    if context.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in context["notes"]] + [""]
    if context.get("figure"):
        lines += ["## Figure", "", f"![reconstructions]({context['figure']})", "", context["figure_caption"], ""]
    return "\n".join(lines)


def margins_section(results: dict[Setting, list[MethodResult]]) -> list[str]:
    """ReSample minus each baseline: mean PSNR and SSIM differences, paired over the slices both
    were scored on."""
    lines = ["## ReSample's margins (ReSample minus baseline; paired mean over the slices both ran on)", "",
             "| setting | vs | ΔPSNR (dB) | ΔSSIM | ReSample wins PSNR / SSIM on |", "|---|---|---|---|---|"]
    for setting, rows in results.items():
        by = {r.method: r for r in rows}
        if "resample" not in by:
            continue
        ours = by["resample"]
        for base in ("fbp", "cgls", "tv", "latent_dps", *ABLATIONS):
            if base not in by:
                continue
            dp, ds = _paired_differences(ours, by[base])
            lines.append(f"| {setting.label} | {base} | {dp.mean():+.2f} | {ds.mean():+.3f} | "
                         f"{int((dp > 0).sum())}/{dp.size} / {int((ds > 0).sum())}/{ds.size} slices |")
    return lines + [""]


def calibration_section(results: dict[Setting, list[MethodResult]]) -> list[str]:
    """Per-slice uncertainty calibration of the ``resample_posterior`` rows (absent without them)."""
    rows = [(setting, r) for setting, rs in results.items() for r in rs if "spearman" in r.extra]
    if not rows:
        return []
    lines = ["## Uncertainty calibration (ReSample's posterior std against the error of the posterior mean)", "",
             "Per slice, inside the reconstruction circle: Spearman rank correlation of the per-pixel std with "
             "|mean - truth| (1: the map ranks the errors perfectly, 0: unrelated) and the fraction of pixels with "
             "|mean - truth| <= 2 std (0.954 for calibrated Gaussian errors). Mean ± std over slices, and the range.",
             "", "| setting | slices | samples | Spearman | Spearman range | coverage of ±2 std | coverage range |",
             "|---|---|---|---|---|---|---|"]
    for setting, r in rows:
        rho, cov = np.asarray(r.extra["spearman"], float), np.asarray(r.extra["coverage"], float)
        lines.append(f"| {setting.label} | {len(rho)} | {r.extra['n_samples']} | {_mean_std(list(rho), '.2f')} | "
                     f"{np.nanmin(rho):.2f} to {np.nanmax(rho):.2f} | {_mean_std(list(cov), '.3f')} | "
                     f"{cov.min():.3f} to {cov.max():.3f} |")
    return lines + [""]


def _paired_differences(ours: MethodResult, base: MethodResult) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice PSNR and SSIM differences ``ours - base`` on the slices both were scored on."""
    common = sorted(set(ours.slices) & set(base.slices))
    pos_ours = {s: k for k, s in enumerate(ours.slices)}
    pos_base = {s: k for k, s in enumerate(base.slices)}
    dp = np.asarray([ours.psnr[pos_ours[s]] - base.psnr[pos_base[s]] for s in common])
    ds = np.asarray([ours.ssim[pos_ours[s]] - base.ssim[pos_base[s]] for s in common])
    return dp, ds


def _to_gray(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip((img - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def make_figure(path: Path, columns: list[tuple[str, np.ndarray]], std_hu: np.ndarray | None, slice_ids: list[str]) -> None:
    """A PNG grid: one row per slice; ground truth, methods (window [-1000, 1000] HU) and the
    ReSample std map (0 to :data:`STD_DISPLAY_MAX_HU` HU)."""
    from PIL import Image, ImageDraw

    tiles = list(columns) + ([("ReSample std (0-200 HU)", std_hu)] if std_hu is not None else [])
    n_rows, size, header = len(slice_ids), columns[0][1].shape[-1], 18
    canvas = Image.new("L", (size * len(tiles), header + n_rows * (size + header)), color=255)
    draw = ImageDraw.Draw(canvas)
    for c, (name, stack) in enumerate(tiles):
        draw.text((c * size + 4, 2), name, fill=0)
        for r in range(n_rows):
            is_std = std_hu is not None and c == len(tiles) - 1
            gray = _to_gray(stack[r], 0.0, STD_DISPLAY_MAX_HU) if is_std else _to_gray(stack[r], -1000.0, 1000.0)
            top = header + r * (size + header)
            canvas.paste(Image.fromarray(gray), (c * size, top + header))
            if c == 0:
                draw.text((4, top + 2), slice_ids[r], fill=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


# --------------------------------------------------------------------------------------------
# modes


def parse_settings(args: argparse.Namespace) -> list[Setting]:
    return [Setting(g, v, sim) for sim in args.simulations for v in args.views for g in args.geometries]


def figure_setting(args: argparse.Namespace) -> Setting:
    """``--figure-setting`` under the first of ``--simulations``."""
    geometry, views = args.figure_setting
    return Setting(geometry, int(views), args.simulations[0])


def evaluate(args: argparse.Namespace) -> None:
    hu_all, ids_all = load_split(args.data, args.split)
    idx = evaluation_indices(len(hu_all), args.n_slices)
    hu, ids = hu_all[idx], [ids_all[i] for i in idx]
    methods = list(args.methods) + (list(ABLATIONS) if args.ablations else [])
    needs_prior = any(m in PRIOR_METHODS for m in methods)
    prior, prior_text = load_prior(args) if needs_prior else (None, "not used")
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
        "preset_config": asdict(sampler_config(args)),
        "sampler_overrides": list(args.sampler),
        "resample_samples": args.resample_samples,
        "tv_weight": f"{TVConfig().weight:g}",
        "notes": list(args.note),
    }
    results: dict[Setting, list[MethodResult]] = {}
    figure_data: dict[str, np.ndarray] = {}
    out_of_time = False
    for setting in parse_settings(args):
        if out_of_time:
            break
        # Simulated on the whole split, so a slice has the same noise in every run (runs on
        # different subsets pair up slice by slice), then restricted to the evaluated slices.
        problem_all, ref_all = simulate(hu_all, setting, args)
        problem, ref_hu = restrict(problem_all, idx), ref_all[idx]
        rows: list[MethodResult] = []
        for method in methods:
            if args.budget_min and (time.perf_counter() - started) / 60 > args.budget_min:
                context["notes"].append(f"time budget of {args.budget_min} min reached: {method} at {setting.label} "
                                        "and everything after it were not run")
                out_of_time = True
                break
            cfg = method_config(method, args)
            n_samples = args.resample_samples if method in RESAMPLE_ROWS else 1
            images, _, sec, peak, _ = run_method(method, problem, prior, cfg, args, n_samples=n_samples)
            rows.append(score(method, cfg, images, problem, ref_hu, sec, peak, idx))
            print(f"[{setting.label}] {method}: PSNR {np.mean(rows[-1].psnr):.2f} SSIM {np.mean(rows[-1].ssim):.3f} "
                  f"{sec:.2f} s/slice", flush=True)
            if setting == figure_setting(args) and method in FIGURE_METHODS:
                figure_data[method] = model_to_hu(images[: args.figure_slices, 0]).numpy()
        if "resample" in methods and args.uncertainty_samples > 1 and args.calibration_slices and not out_of_time:
            rows.append(posterior_row(problem, ref_hu, prior, idx, args))
        results[setting] = rows
        write_outputs(results, context, args)
        if figure_data and setting == figure_setting(args):
            add_figure(figure_data, hu, ids, problem, prior, setting, args, context)
            write_outputs(results, context, args)
    print(f"wrote {args.out / 'quality.md'}")


def posterior_row(problem: LinearProblem, ref_hu: torch.Tensor, prior: Any, idx: np.ndarray,
                  args: argparse.Namespace) -> MethodResult:
    """ReSample with ``--uncertainty-samples`` posterior samples on ``--calibration-slices`` evenly
    spaced evaluated slices: the posterior mean's metrics and the std map's calibration per slice."""
    positions = evaluation_indices(len(idx), args.calibration_slices)
    cfg = method_config(POSTERIOR_ROW, args)
    images, std, sec, peak, _ = run_method("resample", problem, prior, cfg, args,
                                           n_samples=args.uncertainty_samples, indices=positions)
    row = score(POSTERIOR_ROW, cfg, images, restrict(problem, positions), ref_hu[positions], sec, peak, idx[positions])
    spearman, coverage = metrics.uncertainty_calibration(model_to_hu(std[:, 0].double()),
                                                         model_to_hu(images[:, 0].double()), ref_hu[positions])
    row.extra = {"n_samples": args.uncertainty_samples, "spearman": spearman.tolist(), "coverage": coverage.tolist()}
    print(f"[{problem.y.shape[0]} slices] posterior of {args.uncertainty_samples}: PSNR {np.mean(row.psnr):.2f} "
          f"Spearman {np.nanmean(spearman):.2f} coverage {np.mean(coverage):.3f}", flush=True)
    return row


def add_figure(figure_data: dict[str, np.ndarray], hu: np.ndarray, ids: list[str], problem: LinearProblem,
               prior: Any, setting: Setting, args: argparse.Namespace, context: dict[str, Any]) -> None:
    """The figure of ``--figure-slices`` slices at the figure setting, with ReSample's std map
    from ``--uncertainty-samples`` posterior samples."""
    n = min(args.figure_slices, len(hu))
    std_hu = None
    if prior is not None and args.uncertainty_samples > 1:
        cfg = method_config("resample", args)
        _, std, _, _, _ = run_method("resample", problem, prior, cfg, args, n_samples=args.uncertainty_samples,
                                     indices=np.arange(n))
        std_hu = model_to_hu(std[:, 0]).numpy()
    names = {"fbp": "FBP", "tv": "TV", "latent_dps": "Latent-DPS", "resample": "ReSample"}
    columns = [("ground truth", hu[:n])] + [(names[m], figure_data[m]) for m in FIGURE_METHODS if m in figure_data]
    path = args.out / "quality_figure.png"
    make_figure(path, columns, std_hu, ids[:n])
    context["figure"] = path.name
    context["figure_caption"] = (f"{setting.label}; window [-1000, 1000] HU; the last column is the per-pixel std of "
                                 f"{args.uncertainty_samples} ReSample posterior samples (0-{STD_DISPLAY_MAX_HU:.0f} HU)."
                                 if std_hu is not None else f"{setting.label}; window [-1000, 1000] HU.")


def write_outputs(results: dict[Setting, list[MethodResult]], context: dict[str, Any], args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.md").write_text(format_report(results, context))
    raw = {"context": context, "settings": {s.label: asdict(s) for s in results},
           "results": {s.label: [asdict(r) for r in rows] for s, rows in results.items()}}
    (args.out / "quality.json").write_text(json.dumps(raw, indent=1))


def merge(args: argparse.Namespace) -> None:
    """One report from several runs' ``quality.json`` (e.g. one process per geometry, or the
    costly methods on fewer slices); the first run's context is kept, with the first figure
    found (copied into ``--out``), and the commands listed."""
    raws = [json.loads((d / "quality.json").read_text()) for d in args.merge]
    context = raws[0]["context"]
    with_figure = [(d, r["context"]) for d, r in zip(args.merge, raws) if r["context"].get("figure")]
    if with_figure:
        source_dir, source_context = with_figure[0]
        context["figure"], context["figure_caption"] = source_context["figure"], source_context["figure_caption"]
        args.out.mkdir(parents=True, exist_ok=True)
        figure = source_dir / source_context["figure"]
        if figure.resolve() != (args.out / figure.name).resolve():
            shutil.copyfile(figure, args.out / figure.name)
    context["command"] = " ; ".join(r["context"]["command"] for r in raws) + f" ; {args.command}"
    context["notes"] = [n for r in raws for n in r["context"].get("notes", [])] + list(args.note)
    results: dict[Setting, list[MethodResult]] = {}
    context["simulations"] = sorted({s for r in raws for s in r["context"].get("simulations", ["matched"])},
                                    key=SIMULATIONS.index)
    for raw in raws:  # a method already present at a setting is kept from the earlier run
        settings = raw.get("settings", {})
        for label, rows in raw["results"].items():
            setting = Setting(**settings[label]) if label in settings else Setting.from_label(label)
            have = results.setdefault(setting, [])
            have += [MethodResult(**r) for r in rows if r["method"] not in {h.method for h in have}]
    order = list(BASE_METHODS) + [POSTERIOR_ROW] + list(ABLATIONS)
    results = {s: sorted(rows, key=lambda r: order.index(r.method))
               for s, rows in sorted(results.items(), key=lambda kv: (SIMULATIONS.index(kv[0].simulation),
                                                                       kv[0].n_views, kv[0].geometry != "parallel"))}
    write_outputs(results, context, args)
    print(f"wrote {args.out / 'quality.md'}")


@dataclass(frozen=True)
class Tunable:
    """One baseline knob chosen once on spare val slices and written to ``tuned.py``."""

    description: str
    grid: tuple[float, ...]
    constant: str
    """Name of the constant in ``resample_med/sampling/tuned.py`` (its provenance: ``<name>_PROVENANCE``)."""
    field_name: str
    """The config field it sets."""


TUNABLES: dict[str, Tunable] = {
    "tv": Tunable("TV weight", TV_GRID, "TV_WEIGHT", "weight"),
    "latent_dps": Tunable("Latent-DPS step size", DPS_STEP_GRID, "LATENT_DPS_FAST_STEP_SIZE", "step_size"),
}


def tune(args: argparse.Namespace) -> None:
    """Pick the ``--tune`` method's knob maximising mean PSNR on ``--tune-slices`` val slices that
    are not in the ``--n-slices`` evaluation subset, at every ``--views`` x ``--geometries``
    setting; write it to ``resample_med/sampling/tuned.py``."""
    method, tunable = args.tune, TUNABLES[args.tune]
    prior = load_prior(args)[0] if method in PRIOR_METHODS else None
    hu_all, _ = load_split(args.data, args.split)
    eval_idx = set(evaluation_indices(len(hu_all), args.n_slices).tolist())
    spare = np.asarray([i for i in range(len(hu_all)) if i not in eval_idx] or list(range(len(hu_all))))
    tune_idx = spare[evaluation_indices(len(spare), args.tune_slices)]
    scores: dict[float, list[float]] = {v: [] for v in tunable.grid}
    for setting in parse_settings(args):
        problem_all, ref_all = simulate(hu_all, setting, args)
        problem, ref_hu = restrict(problem_all, tune_idx), ref_all[tune_idx]
        for value in tunable.grid:
            config = replace(method_config(method, args), **{tunable.field_name: value})
            images, _, _, _, _ = run_method(method, problem, prior, config, args)
            scores[value].append(float(np.mean(metrics.psnr(model_to_hu(images[:, 0].double()), ref_hu))))
            print(f"[{setting.label}] {tunable.description} {value:.2e}: PSNR {scores[value][-1]:.2f}", flush=True)
    best = max(scores, key=lambda v: np.mean(scores[v]))
    preset = f", preset {args.preset}" if method in PRIOR_METHODS else ""
    provenance = (f"benchmarks/evaluate.py --tune {method} on {dt.date.today()}: grid {[f'{v:.1e}' for v in tunable.grid]}, "
                  f"best mean PSNR {np.mean(scores[best]):.2f} dB over val slices {tune_idx.tolist()} at "
                  f"{[s.label for s in parse_settings(args)]}, I0 = {args.photons:g}{preset}")
    text = TUNED_FILE.read_text()
    text = re.sub(rf"^{tunable.constant} = .*$", f"{tunable.constant} = {best:.6g}", text, flags=re.M)
    text = re.sub(rf"^{tunable.constant}_PROVENANCE = .*$", f"{tunable.constant}_PROVENANCE = {provenance!r}",
                  text, flags=re.M)
    TUNED_FILE.write_text(text)
    print(f"{tunable.description} {best:.3g} written to {TUNED_FILE}")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The harness's options; ``prog`` names the command in usage lines (``resample-med evaluate``)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--tune", choices=sorted(TUNABLES),
                      help="choose the TV weight or the Latent-DPS step size (--preset) on spare val slices and store it")
    mode.add_argument("--merge", nargs="+", type=Path, metavar="DIR",
                      help="combine the quality.json of runs split over processes into --out/quality.md")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="npz of 256x256 HU slices with train/val splits (../shared/data/ct_hu256.npz)")
    p.add_argument("--split", default="val", help="split of the npz to evaluate on")
    p.add_argument("--n-slices", type=int, default=None, help="evenly spaced subset of the split (default: all)")
    p.add_argument("--geometries", nargs="+", default=["parallel", "fan"], choices=["parallel", "fan"],
                   help="beam geometries to evaluate")
    p.add_argument("--views", nargs="+", type=int, default=[20, 30, 60], help="numbers of projection views")
    p.add_argument("--photons", type=float, default=1e5, help="incident photons per ray (Poisson noise)")
    p.add_argument("--simulations", nargs="+", default=[SIMULATIONS[0]], choices=SIMULATIONS,
                   help="how data are simulated: independent (finer model, default) and/or matched (the inverse crime)")
    p.add_argument("--pixel-spacing", type=float, default=1.4, help="mm per pixel of the 256^2 grid (not stored in the npz)")
    p.add_argument("--methods", nargs="+", default=list(BASE_METHODS), choices=list(BASE_METHODS) + list(ABLATIONS),
                   help="reconstruction methods to compare")
    p.add_argument("--ablations", action="store_true", help="also run the ReSample ablations")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="sampler preset (ReSample, Latent-DPS)")
    p.add_argument("--sampler", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the preset's ReSample config (repeatable), e.g. warm_start=tv "
                        "warm_start_step=14 final_tau=4")
    p.add_argument("--resample-samples", type=int, default=1,
                   help="ReSample (and ablation) rows are the mean of this many posterior samples")
    p.add_argument("--model", default="default", help="'default' (the shipped prior) or a bundle folder")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=8, help="slices reconstructed together")
    p.add_argument("--seed", type=int, default=0, help="seed of noise and sampling")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is far faster when other processes share the cores)")
    p.add_argument("--figure-setting", nargs=2, default=["parallel", "30"], metavar=("GEOMETRY", "VIEWS"),
                   type=lambda s: int(s) if s.isdigit() else s, help="the setting the figure shows")
    p.add_argument("--figure-slices", type=int, default=3, help="slices shown in the figure")
    p.add_argument("--uncertainty-samples", type=int, default=4,
                   help="ReSample posterior samples for the figure's std map and the calibration rows (1: neither)")
    p.add_argument("--calibration-slices", type=int, default=8,
                   help="evaluated slices (evenly spaced) with the posterior-mean row and uncertainty calibration (0: none)")
    p.add_argument("--tune-slices", type=int, default=6, help="spare val slices --tune chooses on")
    p.add_argument("--budget-min", type=float, default=None, help="stop starting new runs after this many minutes")
    p.add_argument("--note", action="append", default=[], help="a note to add to the report (repeatable)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of quality.md, quality.json and the figure")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Run the harness with ``argv`` (default ``sys.argv[1:]``); ``prog`` names it in usage lines."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(prog).parse_args(argv)
    args.command = "python benchmarks/evaluate.py " + " ".join(shlex.quote(a) for a in argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge:
        merge(args)
    elif args.tune:
        tune(args)
    else:
        evaluate(args)


if __name__ == "__main__":
    main()
