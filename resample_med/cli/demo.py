"""``resample-med demo``: FBP vs ReSample on a shipped sample CT slice, offline, in about a minute on a CPU.

Loads the shipped default model and a sample CT (no network, no downloads), simulates a
sparse-view scan of one slice, reconstructs it with FBP and with ReSample (``fast`` preset on CPU,
``default`` on CUDA), prints PSNR, SSIM and seconds for each, and writes ``demo.png`` (ground truth,
FBP, ReSample, |ReSample - truth|) and ``demo.json`` to ``--out``.

``--sample chest`` (default) is a chest slice, the anatomy the prior was trained for, from a patient
held out of its training data; ``--sample head`` is a head slice, outside the prior's training
distribution (the out-of-distribution example: expect the prior to hurt rather than help).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from resample_med.cli import common
from resample_med.config import AUTO, resolve_device
from resample_med.io.sample import DEFAULT_SAMPLE, SAMPLE_CTS

DEMO_VIEWS = 30
DEMO_PHOTONS = 1e5
DEMO_METHODS = ("fbp", "resample")
DEFAULT_OUT = Path("resample_med_demo")
DISPLAY_WINDOW_HU = (-1000.0, 1000.0)
"""Grey-level window of the image panels (lung to bone)."""
ERROR_WINDOW_HU = (0.0, 200.0)
"""Grey-level window of the absolute-error panel."""
PANEL_TITLES = ("ground truth", "FBP", "ReSample", "|ReSample - truth|")
TITLE_HEIGHT_PX = 16


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="FBP vs ReSample on the shipped sample CT (offline)",
        description=common.plain_help(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default ./{DEFAULT_OUT}/)")
    parser.add_argument("--model", metavar="DIR", help="model bundle folder (default: the shipped model)")
    parser.add_argument(
        "--sample",
        choices=sorted(SAMPLE_CTS),
        default=DEFAULT_SAMPLE,
        help=f"shipped sample CT (default {DEFAULT_SAMPLE}, in the prior's training distribution; "
        "head is the out-of-distribution example)",
    )
    parser.add_argument("--views", type=int, default=DEMO_VIEWS, help=f"parallel-beam views (default {DEMO_VIEWS})")
    parser.add_argument("--slice", type=int, dest="slice_index", help="slice of the sample CT (default: middle)")
    parser.add_argument("--preset", default=AUTO, help="ReSample preset (default: fast on CPU, default on CUDA)")
    parser.add_argument("--steps", type=int, help="override the preset's number of DDIM steps")
    parser.add_argument("--device", default=AUTO, help="cpu | cuda | auto (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed of noise and sampling")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; prints a table and writes the PNG. Returns the exit code."""
    from resample_med.io import iter_model_slices, load_sample_ct
    from resample_med.pipeline import AcquisitionConfig, reconstruct_slices, simulate_measurements
    from resample_med.pipeline.seeding import make_generator

    device = resolve_device(args.device)
    preset = common.resolve_preset(args.preset, device)
    prior = common.load_prior(args.model, device)
    sample = SAMPLE_CTS[args.sample]
    volume = load_sample_ct(args.sample)
    index = volume.n_slices // 2 if args.slice_index is None else args.slice_index
    if not 0 <= index < volume.n_slices:
        raise common.ConfigError(f"--slice {index} is outside the sample CT's 0..{volume.n_slices - 1}")
    model_slice = next(s for s in iter_model_slices(volume, size=prior.image_size) if s.index == index)
    acquisition = AcquisitionConfig(geometry="parallel", n_views=args.views, photons=DEMO_PHOTONS)
    measurements = simulate_measurements(
        model_slice.hu,
        model_slice.pixel_spacing_mm,
        acquisition,
        generator=make_generator(args.seed, "noise", index, device=device),
        device=device,
    )
    overrides = {} if args.steps is None else {"steps": args.steps}
    print(f"resample-med demo: sample '{args.sample}', {sample.description}")
    print(f"  {sample.distribution_note}")
    print(
        f"  slice {index} on a {prior.image_size}x{prior.image_size} grid ({model_slice.pixel_spacing_mm:.2f} mm), "
        f"{args.views} parallel views, {DEMO_PHOTONS:.0e} photons/ray, device {device}, ReSample preset '{preset}'"
    )
    print(f"{'method':<10} {'PSNR [dB]':>9} {'SSIM':>6} {'seconds':>8}")
    results: dict[str, Any] = {}
    for method in DEMO_METHODS:
        config = common.sampler_config(method, preset, overrides if method != "fbp" else {})
        rec = reconstruct_slices(
            measurements, method, prior=prior, config=config, batch_size=1, seed=args.seed, first_index=index
        )
        row = rec.per_slice[0]
        results[method] = {"image": rec.hu[0], **{k: row[k] for k in ("psnr", "ssim", "rmse_hu", "seconds")}}
        print(f"{method:<10} {row['psnr']:>9.2f} {row['ssim']:>6.3f} {row['seconds']:>8.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    reference = measurements.reference_hu[0].cpu().numpy()
    png = save_figure(args.out / "demo.png", reference, results["fbp"]["image"], results["resample"]["image"])
    summary = {
        "sample": args.sample,
        "in_distribution": sample.in_distribution,
        "slice": index,
        "acquisition": acquisition.to_dict(),
        "preset": preset,
        "device": str(device),
        "model": args.model or "shipped default model",
        "results": {m: {k: v for k, v in r.items() if k != "image"} for m, r in results.items()},
    }
    (args.out / "demo.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {png} and {args.out / 'demo.json'}")
    if sample.in_distribution:
        print("try --sample head for a slice outside the prior's training distribution")
    return common.EXIT_OK


def save_figure(path: Path, truth: np.ndarray, fbp: np.ndarray, resample: np.ndarray) -> Path:
    """Side-by-side PNG: truth, FBP, ReSample (display window) and |ReSample - truth| (error window)."""
    from PIL import Image, ImageDraw

    panels = [
        _to_grey(truth, DISPLAY_WINDOW_HU),
        _to_grey(fbp, DISPLAY_WINDOW_HU),
        _to_grey(resample, DISPLAY_WINDOW_HU),
        _to_grey(np.abs(resample - truth), ERROR_WINDOW_HU),
    ]
    height, width = panels[0].shape
    canvas = Image.new("L", (width * len(panels), height + TITLE_HEIGHT_PX), color=0)
    draw = ImageDraw.Draw(canvas)
    for k, (panel, title) in enumerate(zip(panels, PANEL_TITLES)):
        canvas.paste(Image.fromarray(panel), (k * width, TITLE_HEIGHT_PX))
        draw.text((k * width + 4, 2), title, fill=255)
    canvas.save(path)
    return path


def _to_grey(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """HU image -> uint8 grey levels of ``window``."""
    low, high = window
    return (np.clip((image - low) / (high - low), 0.0, 1.0) * 255).round().astype(np.uint8)
