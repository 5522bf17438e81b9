"""Choose the prior's training recipe by measurement on the CPU: speed levers, then short runs.

Part 1, speed (all variants interleaved in one run, median of repeats, so the ratios hold even on
a shared machine): one training step of the shipped latent UNet (batch 32) in fp32, under bf16
autocast, bf16 + channels_last, and torch.compile, and of the shipped UNet deepened by one layer per
block (``train diffusion --deepen``); one whole-slice autoencoder step (batch 2) in fp32, bf16 and
bf16 decoder-only; one UNet evaluation at batch 1 (the sampling cost) for the shipped UNet, a 1.5x
wider one and the deepened one. ``--speed-matching fp32`` times the fp32 rows only.

Part 2, quality per CPU-second: short training runs of a fixed number of steps from the shipped
weights through the project's own training functions, on the data the long run uses (the open train
slices of ct_hu256.npz and all of ct_extra_hu256.npz, patient-balanced, zoom levels 1 and 0.8),
scored on the 42 val slices: the UNet's held-out denoising loss (fixed noise and timesteps,
v-prediction, min-SNR-5 weights) and the autoencoder's val PSNR in the window [-1000, 1000] and
HU-RMSE. Each run reports the process CPU-seconds it used (robust to other jobs on the machine,
unlike wall time).

    python benchmarks/prior_recipe.py --unet-steps 120 --ae-steps 100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from resample_med.models import load_default_model
from resample_med.models.config import get_architecture
from resample_med.models.networks import apply_unet
from resample_med.training.autoencoder import AUTOENCODER_PRESETS, train_autoencoder, trainable_parameters
from resample_med.training.diffusion import (
    DIFFUSION_PRESETS,
    HELD_OUT_MIN_SNR_GAMMA,
    diffusion_loss,
    train_diffusion,
)
from resample_med.training.grow import deepen_bundle
from resample_med.training.runtime import autocast

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DATA = (str(SHARED_DATA / "ct_hu256.npz"), str(SHARED_DATA / "ct_extra_hu256.npz"))
DEFAULT_MODEL = str(REPO_ROOT / "resample_med" / "default_model")
UNET_BATCH = 32
AE_BATCH = 2
REPEATS = 3
STEPS_PER_REPEAT = 3
ZOOM_LEVELS = (1.0, 0.8)
"""Zoom-out levels of the UNet runs: the shipped data fill the frame, other scanners put the body at 60-90% of it."""


def _median_seconds(step: Callable[[], None], warmup: int = 1) -> Callable[[], float]:
    """A closure timing ``STEPS_PER_REPEAT`` calls of ``step`` (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        step()

    def timed() -> float:
        t0 = time.perf_counter()
        for _ in range(STEPS_PER_REPEAT):
            step()
        return (time.perf_counter() - t0) / STEPS_PER_REPEAT

    return timed


def _unet_train_step(
    bf16: bool, channels_last: bool = False, compile_: bool = False, deepen: bool = False
) -> Callable[[], None]:
    """One optimizer step of the shipped UNet on random scaled latents (batch UNET_BATCH)."""
    bundle = load_default_model()
    if deepen:
        bundle = deepen_bundle(bundle)
    unet = bundle.unet.train().requires_grad_(True)
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    model = torch.compile(unet) if compile_ else unet
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    z0 = torch.randn(UNET_BATCH, *bundle.latent_shape, generator=generator)
    patch = bundle.config.architecture.unet.patch_size

    def step() -> None:
        loss = diffusion_loss(model, bundle.scheduler, z0, generator, HELD_OUT_MIN_SNR_GAMMA, patch, cpu_bf16=bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _ae_train_step(bf16: bool, decoder_only: bool) -> Callable[[], None]:
    """One optimizer step of the shipped autoencoder on AE_BATCH whole random 256x256 slices."""
    ae = load_default_model().autoencoder.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable_parameters(ae, "decoder" if decoder_only else "all"), lr=1e-4)
    x = torch.randn(AE_BATCH, 1, 256, 256, generator=torch.Generator().manual_seed(0)) * 0.3
    device = torch.device("cpu")

    def step() -> None:
        with autocast(device, bf16), torch.set_grad_enabled(not decoder_only):
            z = ae.encode(x).latent_dist.mean
        with autocast(device, bf16):
            rec = ae.decode(z).sample
        loss = (rec.float() - x).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _unet_eval(bf16: bool, architecture: str | None = None, deepen: bool = False) -> Callable[[], None]:
    """One UNet evaluation at batch 1 (a sampling step) of the shipped UNet, the UNet of another
    ``architecture`` preset (random weights: the cost is the same), or the shipped one deepened by
    one layer per block (``train diffusion --deepen``)."""
    from resample_med.models.networks import build_unet

    bundle = load_default_model()
    if deepen:
        bundle = deepen_bundle(bundle)
    arch = bundle.config.architecture
    unet = bundle.unet.eval()
    if architecture is not None:
        arch = dataclasses.replace(arch, unet=get_architecture(architecture).unet)
        unet = build_unet(arch).eval()
    z = torch.randn(1, *bundle.latent_shape)
    t = torch.tensor([500])
    device = torch.device("cpu")

    @torch.no_grad()
    def step() -> None:
        with autocast(device, bf16):
            apply_unet(unet, z, t, arch.unet.patch_size)

    return step


def measure_speed(matching: tuple[str, ...] = ("",)) -> list[dict]:
    """Median seconds per call of every variant whose name contains one of ``matching``,
    interleaved over REPEATS rounds."""
    variants: dict[str, Callable[[], Callable[[], None]]] = {
        "UNet train step, batch 32, fp32": lambda: _unet_train_step(False),
        "UNet train step, batch 32, bf16 autocast": lambda: _unet_train_step(True),
        "UNet train step, batch 32, bf16 + channels_last": lambda: _unet_train_step(True, channels_last=True),
        "UNet train step, batch 32, bf16 + torch.compile": lambda: _unet_train_step(True, compile_=True),
        "UNet train step, batch 32, fp32, deepened (+1 layer per block)": lambda: _unet_train_step(False, deepen=True),
        "AE train step, batch 2 x 256^2, fp32, all weights": lambda: _ae_train_step(False, False),
        "AE train step, batch 2 x 256^2, bf16, all weights": lambda: _ae_train_step(True, False),
        "AE train step, batch 2 x 256^2, bf16, decoder only": lambda: _ae_train_step(True, True),
        "UNet eval, batch 1, fp32 (shipped width)": lambda: _unet_eval(False),
        "UNet eval, batch 1, bf16 (shipped width)": lambda: _unet_eval(True),
        "UNet eval, batch 1, fp32, 1.5x wider": lambda: _unet_eval(False, "wide"),
        "UNet eval, batch 1, fp32, deepened (+1 layer per block)": lambda: _unet_eval(False, deepen=True),
    }
    variants = {name: make for name, make in variants.items() if any(text in name for text in matching)}
    timers, setup = {}, {}
    for name, make in variants.items():
        t0 = time.perf_counter()
        try:
            timers[name] = _median_seconds(make())
        except Exception as exc:  # a lever that does not work here is a result, not a crash
            timers[name] = None
            setup[name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            continue
        setup[name] = f"{time.perf_counter() - t0:.1f}"
        print(f"set up {name}: {setup[name]} s", flush=True)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(REPEATS):
        for name, timed in timers.items():
            if timed is not None:
                samples[name].append(timed())
    rows = []
    for name in variants:
        med = statistics.median(samples[name]) if samples[name] else None
        rows.append({"variant": name, "seconds": med, "setup_seconds": setup[name]})
        print(f"{name}: {med}", flush=True)
    return rows


def _seed_latent_cache(run: Path, cache: Path) -> None:
    """Reuse the first UNet run's latent cache (same encoder, data and zoom levels)."""
    if cache.is_file():
        run.mkdir(parents=True, exist_ok=True)
        shutil.copy(cache, run / cache.name)


def quality_runs(unet_steps: int, ae_steps: int, work: Path, threads: int) -> list[dict]:
    """Short continued runs of both networks from the shipped weights, scored on val.

    The UNet's score is its held-out loss with ``ema_decay = 0`` (the raw weights: an EMA over a
    hundred steps would mostly report the starting point).
    """
    common_dm = dict(
        data=DATA,
        max_steps=unet_steps,
        num_threads=threads,
        patient_balance=0.5,
        zoom_levels=ZOOM_LEVELS,
        progress_bar=False,
        val_every=10**9,
        sample_every=10**9,
        checkpoint_every=10**9,
        init_from=DEFAULT_MODEL,
        ema_decay=0.0,
        warmup_steps=20,
    )
    unet_runs = {
        "UNet: shipped, no training (reference)": dict(max_steps=0),
        "UNet: continue, fp32, lr 1e-3": dict(lr=1e-3),
        "UNet: continue, bf16 autocast, lr 1e-3": dict(lr=1e-3, cpu_bf16=True),
        "UNet: continue, bf16 autocast, lr 3e-4": dict(lr=3e-4, cpu_bf16=True),
    }
    common_ae = dict(
        data=DATA,
        max_steps=ae_steps,
        num_threads=threads,
        patient_balance=0.5,
        warmup_steps=10,
        init_from=DEFAULT_MODEL,
        progress_bar=False,
        val_every=10**9,
        checkpoint_every=10**9,
    )
    ae_runs = {
        "AE: shipped, no training (reference)": dict(max_steps=0),
        "AE: continue, all weights, bf16 autocast, lr 5e-4": dict(trainable="all", cpu_bf16=True),
        "AE: continue, decoder only, bf16 autocast, lr 5e-4": dict(trainable="decoder", cpu_bf16=True),
    }
    rows = []
    cache = work / "unet0" / "latents.pt"
    for i, (name, opts) in enumerate(unet_runs.items()):
        run = work / f"unet{i}"
        if i:
            _seed_latent_cache(run, cache)
        cfg = dataclasses.replace(DIFFUSION_PRESETS["cpu"], out_dir=str(run), **{**common_dm, **opts})
        cpu0 = time.process_time()
        s = train_diffusion(cfg)
        rows.append(
            {
                "run": name,
                "steps": s["steps_this_run"],
                "cpu_seconds": time.process_time() - cpu0,
                "val_loss": s["val_loss_ema"],
            }
        )
        print(rows[-1], flush=True)
    for i, (name, opts) in enumerate(ae_runs.items()):
        cfg = dataclasses.replace(AUTOENCODER_PRESETS["cpu"], out_dir=str(work / f"ae{i}"), **{**common_ae, **opts})
        cpu0 = time.process_time()
        s = train_autoencoder(cfg)
        rows.append(
            {
                "run": name,
                "steps": s["steps_this_run"],
                "cpu_seconds": time.process_time() - cpu0,
                "val_psnr_db": s["val"]["psnr_db"],
                "val_hu_rmse": s["val"]["hu_rmse"],
            }
        )
        print(rows[-1], flush=True)
    return rows


def write_markdown(path: Path, speed: list[dict], quality: list[dict], command: str) -> None:
    """The two tables; speed ratios against the first (fp32) row of the same kind."""
    ref: dict[str, float | None] = {"UNet train": None, "AE train": None, "UNet eval": None}
    lines = [
        "# Prior recipe: what a CPU-second buys",
        "",
        f"`python benchmarks/prior_recipe.py {command}`; torch {torch.__version__}.",
        "",
    ]
    if speed:
        lines += [
            "## Speed (median s per call; ratio to the fp32 row of the same kind)",
            "",
            "| variant | s | ratio | set-up s |",
            "|---|---|---|---|",
        ]
        for r in speed:
            kind = next(k for k in ref if r["variant"].startswith(k))
            if ref[kind] is None and r["seconds"] is not None:
                ref[kind] = r["seconds"]
            ratio = f"{ref[kind] / r['seconds']:.2f}x" if r["seconds"] and ref[kind] else "-"
            sec = f"{r['seconds']:.3f}" if r["seconds"] else "-"
            lines.append(f"| {r['variant']} | {sec} | {ratio} | {r['setup_seconds']} |")
    if quality:
        lines += [
            "",
            "## Quality after a fixed number of steps from the shipped weights",
            "",
            "CPU-s: process CPU time of the run, including set-up and validation.",
            "",
            "| run | steps | CPU-s | UNet val loss | AE val PSNR dB | AE val HU-RMSE |",
            "|---|---|---|---|---|---|",
        ]
        for r in quality:
            if "val_psnr_db" in r:
                lines.append(
                    f"| {r['run']} | {r['steps']} | {r['cpu_seconds']:.0f} | - | {r['val_psnr_db']:.2f} | {r['val_hu_rmse']:.1f} |"
                )
            else:
                lines.append(f"| {r['run']} | {r['steps']} | {r['cpu_seconds']:.0f} | {r['val_loss']:.4f} | - | - |")
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps({"speed": speed, "quality": quality}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(prog="prior_recipe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--unet-steps", type=int, default=120, help="training steps of each part-2 UNet run")
    parser.add_argument("--ae-steps", type=int, default=100, help="training steps of each part-2 autoencoder run")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--work", default="runs/prior_recipe", help="folder for the short runs")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "prior_recipe.md"))
    parser.add_argument("--skip-quality", action="store_true", help="part 1 only")
    parser.add_argument("--skip-speed", action="store_true", help="part 2 only")
    parser.add_argument(
        "--speed-matching",
        nargs="+",
        default=[""],
        metavar="TEXT",
        help="time only the speed variants whose name contains one of the TEXTs (e.g. fp32; the ratios need the fp32 rows of the shipped UNet)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    speed = [] if args.skip_speed else measure_speed(tuple(args.speed_matching))
    quality = [] if args.skip_quality else quality_runs(args.unet_steps, args.ae_steps, Path(args.work), args.threads)
    write_markdown(Path(args.out), speed, quality, shlex.join(sys.argv[1:]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
