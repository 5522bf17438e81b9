"""How good is the latent diffusion prior? Autoencoder fidelity and a distribution check on val.

Measures, on the ``val`` split of ``ct_hu256.npz`` (all licences, 42 slices, patients disjoint
from training):

1. autoencoder reconstruction x -> D(E(x)): PSNR in the HU window [-1000, 1000] mapped to [0, 1]
   and HU-RMSE;
2. N unconditional DDIM samples (eta = 0 unless ``--eta``) against the real val slices, by three distances:
   - W1: Wasserstein-1 distance between the HU value distributions (HU, lower is better),
     ``W1 = integral |F_a(h) - F_b(h)| dh`` over [-1024, 3071] from 4 HU-bin histograms;
   - HI: histogram intersection ``sum_b min(p_a(b), p_b(b))`` of the same histograms (1 = equal);
   - FD-rand: Frechet distance ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between
     Gaussian fits of 32-d features of a small FIXED random-weight conv net (seed 0, not trained:
     a texture/structure statistic, not an Inception score);
   - PSD: mean squared difference of the log radially averaged power spectra (windowed images);
   The prior's W1 and FD-rand come with their sampling uncertainty: the standard deviation over 200
   bootstrap resamples (with replacement) of the N samples, val fixed; 48 samples of a different
   seed move W1 by several HU, so a difference smaller than about two of these is not a finding;
3. the same distances for reference rows, so the numbers mean something: real-vs-real (open
   *train* slices against val: what a perfect sampler would score), autoencoder reconstructions,
   and a trivial baseline (Gaussian N(0, I) latents decoded: the decoder without the UNet).

4. the UNet's denoising loss (the training objective, ``resample_med.training.diffusion``:
   v-prediction, min-SNR weights) on the val slices and on as many open training slices (those of
   the floor row), each averaged over ``DENOISING_DRAWS`` fixed draws of timesteps and noise with
   its standard error: a val loss well above the training loss says the UNet fits its training
   slices more than CT (generation 2's UNet: 45%; round 5's, trained with dropout: 27%); and the same
   loss with t drawn within each of ``NOISE_BANDS``: at which noise levels that gap opens;

5. the tissue composition of each set: the share of the frame's pixels in the HU ranges of air, lung,
   fat, soft tissue, bone and dense bone (``TISSUE_RANGES_HU``), beside real val's own: which tissue a
   prior under- or over-draws (the shipped prior draws half its training slices' bone, a third of val's), which W1 sums away;

6. with ``--renoise-levels``, where the reverse process loses tissue: the val slices encoded, noised
   to each timestep t (q(z_t | z_0), Ho et al. 2020 Eq. 4) and taken back to t = 0 by DDIM over the
   sampling schedule's steps below t, as in SDEdit (Meng et al. 2022); their tissue composition and
   W1 against val. A tissue that the low levels already lose is lost by the UNet's fine denoising;

7. with ``--strength``, the prior's own reconstruction strength: ReSample ``fast`` from noise with
   one sample and no final data fit (``resample_med.sampling.config.FAST_FROM_NOISE``: the decoded last latent,
   so the image is the prior's, pulled to the data only through the consistency steps) against TV, on the val slices that tuned TV's weight, 30 views, parallel
   and fan, Poisson I0 = 1e5, simulated as ``benchmarks/evaluate.py`` simulates (its default).

Writes ``prior_quality.md`` and ``prior_quality.json`` and a PNG with 16 samples beside 16 real val
slices (window [-1000, 1000]) into ``--out``; prints everything.

    python benchmarks/prior_quality.py --strength --out benchmarks/results/prior_quality
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from resample_med.models import LatentDiffusionBundle, load_default_model
from resample_med.models.config import DISPLAY_WINDOW_HU
from resample_med.models.sample import ddim_scheduler, denoise_latents, sample_images
from resample_med.training.data import VALIDATION_SELECTION, SliceSelection, load_npz_slices
from resample_med.training.validation import autoencoder_metrics, hu_histogram, wasserstein1_hu, window01
from resample_med.units import model_to_hu

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "ct_hu256.npz"
FEATURE_SEED = 0
FEATURE_DIM = 32
DENOISING_DRAWS = 10
NOISE_BANDS = ((0, 100), (100, 300), (300, 600), (600, 1000))
"""Timestep ranges [low, high) of the denoising loss by noise level (SNR above 8.5, 8.5-0.65, 0.65-0.026, below)."""


def histogram_intersection(a: torch.Tensor, b: torch.Tensor) -> float:
    """sum_b min(p_a, p_b) of the HU histograms; 1 for identical distributions."""
    return float(np.minimum(hu_histogram(a), hu_histogram(b)).sum())


def random_feature_net(seed: int = FEATURE_SEED) -> torch.nn.Module:
    """Four stride-2 4x4 convolutions with ReLU (1 -> 16 -> 32 -> 32 -> 32), global mean pool.

    32 features keep the covariance of ~40 images full rank.

    Weights are He-normal from ``torch.Generator().manual_seed(seed)`` and never trained, so the
    features are a fixed, reproducible function of the image.
    """
    g = torch.Generator().manual_seed(seed)
    widths = (1, 16, 32, 32, FEATURE_DIM)
    layers: list[torch.nn.Module] = []
    for cin, cout in zip(widths[:-1], widths[1:]):
        conv = torch.nn.Conv2d(cin, cout, 4, stride=2, padding=1)
        torch.nn.init.kaiming_normal_(conv.weight, generator=g)
        torch.nn.init.zeros_(conv.bias)
        layers += [conv, torch.nn.ReLU()]
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()]
    return torch.nn.Sequential(*layers).eval()


@torch.no_grad()
def features(hu: torch.Tensor, net: torch.nn.Module) -> np.ndarray:
    """(N, 1, H, W) HU -> (N, FEATURE_DIM) features of the windowed images."""
    return net(window01(hu, DISPLAY_WINDOW_HU)).double().numpy()


def frechet_distance(fa: np.ndarray, fb: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of two feature sets (N, d)."""
    from scipy import linalg  # lazy: only for this benchmark

    mu_a, mu_b = fa.mean(0), fb.mean(0)
    sa, sb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = linalg.sqrtm(sa @ sb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2.0 * covmean))


def log_radial_psd(hu: torch.Tensor) -> np.ndarray:
    """Mean log radially averaged power spectrum of windowed images (N, 1, H, W) -> (H/2,)."""
    x = window01(hu, DISPLAY_WINDOW_HU)[:, 0].double()
    power = torch.fft.fftshift(torch.fft.fft2(x - x.mean((-2, -1), keepdim=True)).abs() ** 2, dim=(-2, -1)).mean(0)
    h, w = power.shape
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    r = (yy**2 + xx**2).sqrt().round().long().flatten()
    keep = r < h // 2
    radial = torch.bincount(r[keep], weights=power.flatten()[keep]) / torch.bincount(r[keep])
    return np.log10(radial.numpy() + 1e-12)


def distances(a: torch.Tensor, b: torch.Tensor, net: torch.nn.Module) -> dict[str, float]:
    """All distribution distances between image sets a and b, (N, 1, H, W) HU each."""
    return {
        "w1_hu": wasserstein1_hu(a, b),
        "hist_intersection": histogram_intersection(a, b),
        "fd_random_features": frechet_distance(features(a, net), features(b, net)),
        "log_psd_mse": float(np.mean((log_radial_psd(a) - log_radial_psd(b)) ** 2)),
    }


TISSUE_RANGES_HU: dict[str, tuple[float, float]] = {
    "air": (-float("inf"), -900.0),
    "lung": (-900.0, -500.0),
    "fat": (-150.0, -30.0),
    "soft tissue": (0.0, 100.0),
    "bone": (300.0, float("inf")),
    "dense bone": (700.0, float("inf")),
}
"""Textbook HU ranges, half-open [low, high). Not a partition: the gaps between them (partial-volume
edges, water, contrast-enhanced blood) belong to no class, and dense bone is part of bone."""


def tissue_fractions(hu: torch.Tensor) -> dict[str, float]:
    """Percent of all pixels of the images (N, 1, H, W) in HU whose value lies in each ``TISSUE_RANGES_HU`` range."""
    return {
        name: 100.0 * float(((hu >= low) & (hu < high)).double().mean())
        for name, (low, high) in TISSUE_RANGES_HU.items()
    }


@torch.no_grad()
def encode(bundle: LatentDiffusionBundle, images: torch.Tensor) -> torch.Tensor:
    """Scaled latents (N, C, h, w) of model-unit images (N, 1, H, W), 8 at a time."""
    return torch.cat([bundle.encode(x) for x in images.split(8)])


@torch.no_grad()
def renoised_tissue_fractions(
    bundle: LatentDiffusionBundle, images: torch.Tensor, levels: list[int], steps: int, seed: int
) -> dict[int, dict[str, float]]:
    """Tissue fractions (and ``w1_hu`` against the images) of model-unit images (N, 1, H, W) encoded,
    noised to each of ``levels`` and denoised back by ``steps``-step DDIM (eta 0), keyed by the
    noise level used: the schedule's largest timestep <= the requested one (the module docstring, 6)."""
    timesteps = ddim_scheduler(bundle, steps).timesteps
    z0 = encode(bundle, images)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed)).to(z0.device)
    real_hu = model_to_hu(images.cpu())
    out = {}
    for level in levels:
        below = timesteps[timesteps <= level]
        if len(below) == 0:
            raise ValueError(f"--renoise-levels: {level} is below the first sampling timestep {int(timesteps[-1])}")
        t = int(below[0])
        zt = bundle.scheduler.add_noise(z0, noise, torch.full((len(z0),), t, device=z0.device))
        z = denoise_latents(bundle, zt, t, steps)
        hu = torch.cat([model_to_hu(bundle.decode(c).cpu()) for c in z.split(8)])
        out[t] = tissue_fractions(hu) | {"w1_hu": wasserstein1_hu(hu, real_hu)}
    return out


BOOTSTRAP_RESAMPLES = 200


def bootstrap_spread(
    samples_hu: torch.Tensor, real_hu: torch.Tensor, net: torch.nn.Module, seed: int
) -> dict[str, float]:
    """Std of W1 and FD-rand over ``BOOTSTRAP_RESAMPLES`` resamples (with replacement) of the
    (N, 1, H, W) samples against the fixed real set: how far the sample statistics move by chance."""
    g = torch.Generator().manual_seed(seed)
    f_samples, f_real = features(samples_hu, net), features(real_hu, net)
    w1, fd = [], []
    for _ in range(BOOTSTRAP_RESAMPLES):
        pick = torch.randint(0, len(samples_hu), (len(samples_hu),), generator=g)
        w1.append(wasserstein1_hu(samples_hu[pick], real_hu))
        fd.append(frechet_distance(f_samples[pick.numpy()], f_real))
    return {"w1_hu": float(np.std(w1)), "fd_random_features": float(np.std(fd))}


def side_by_side_png(samples_hu: torch.Tensor, real_hu: torch.Tensor, path: Path, ncols: int = 4) -> Path:
    """Up to 16 samples (left) beside as many real slices (right), window [-1000, 1000], 8 px gap.

    Rows of ``ncols`` images (one shorter row of all of them when there are fewer than ``ncols``).
    """
    from PIL import Image  # lazy: only for figures

    def grid(hu: torch.Tensor) -> np.ndarray:
        t = window01(hu[:, 0], DISPLAY_WINDOW_HU).numpy()
        n, h, w = t.shape
        rows = [np.concatenate(list(t[r * ncols : (r + 1) * ncols]), axis=1) for r in range(n // ncols)]
        return np.concatenate(rows, axis=0)

    n = min(16, len(samples_hu), len(real_hu))
    ncols = min(ncols, n)
    n = n // ncols * ncols
    left, right = grid(samples_hu[:n]), grid(real_hu[:n])
    gap = np.ones((left.shape[0], 8))
    canvas = np.concatenate([left, gap, right], axis=1)
    Image.fromarray((canvas * 255.0 + 0.5).astype(np.uint8)).save(path)
    return path


STRENGTH_SETTINGS = (("parallel", 30), ("fan", 30))
STRENGTH_PHOTONS = 1e5
STRENGTH_PIXEL_MM = 1.4


def prior_strength(bundle: LatentDiffusionBundle, data: Path, seed: int) -> dict[str, dict[str, float]]:
    """Mean PSNR / SSIM of TV and of ReSample ``fast`` from noise, 1 sample, no final data fit, per setting."""
    from resample_variants import TUNE_SLICES

    from resample_med import metrics
    from resample_med.evaluation.data import Setting, load_split, simulate
    from resample_med.pipeline import linearise
    from resample_med.sampling import reconstruct
    from resample_med.sampling.config import FAST_FROM_NOISE

    hu_all, _ = load_split(data, "val")
    idx = np.asarray(TUNE_SLICES)
    out: dict[str, dict[str, float]] = {}
    for geometry, views in STRENGTH_SETTINGS:
        setting = Setting(geometry, views)
        measurements = simulate(
            hu_all, idx, setting, photons=STRENGTH_PHOTONS, pixel_spacing=STRENGTH_PIXEL_MM, seed=seed
        )
        problem, ref_hu = linearise(measurements), measurements.reference_hu
        for label, method, config in (
            ("TV", "tv", None),
            ("ReSample fast, final: none", "resample", dataclasses.replace(FAST_FROM_NOISE, final_consistency="none")),
        ):
            rec = reconstruct(
                method,
                problem.y,
                problem.operator,
                prior=bundle,
                config=config,
                noise_std=problem.noise_std,
                generator=torch.Generator().manual_seed(seed),
            )
            hu = model_to_hu(rec.image[:, 0].double())
            out[f"{setting.label}: {label}"] = {
                "psnr_db": float(metrics.psnr(hu, ref_hu).mean()),
                "ssim": float(metrics.ssim(hu, ref_hu).mean()),
            }
            print(f"{setting.label}: {label}: {out[f'{setting.label}: {label}']}", flush=True)
    return out


def denoising_loss(
    bundle: LatentDiffusionBundle,
    z0: torch.Tensor,
    draws: int = DENOISING_DRAWS,
    timesteps: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Mean and standard error over ``draws`` seeds of the training loss of the UNet on the latents
    z0 (N, C, h, w) of images (``encode``): each seed fixes one timestep and noise per image
    (``validation_loss``), the timestep drawn from ``timesteps`` = [low, high) (None: all of them)."""
    from resample_med.training.diffusion import HELD_OUT_MIN_SNR_GAMMA, validation_loss

    patch = bundle.config.architecture.unet.patch_size
    losses = [
        validation_loss(bundle.unet, bundle.scheduler, z0, seed, HELD_OUT_MIN_SNR_GAMMA, 64, patch, timesteps)
        for seed in range(draws)
    ]
    return {"mean": float(np.mean(losses)), "stderr": float(np.std(losses) / np.sqrt(draws))}


def markdown(report: dict) -> str:
    """The report as a markdown table."""
    ae = report["autoencoder_val"]
    lines = [
        "# Prior quality on the val split",
        "",
        f"Model: `{report['model']}`; val slices: {report['n_val']}; samples: {report['n_samples']} "
        f"({report['sample_steps']} DDIM steps, eta {report.get('eta', 0.0):g}, seed {report['seed']}); {report['seconds']:.0f} s on {report['device']}.",
        "",
        f"Autoencoder reconstruction: **PSNR {ae['psnr_db']:.2f} dB** (window [-1000, 1000] HU -> [0, 1]), "
        f"**HU-RMSE {ae['hu_rmse']:.1f} HU**.",
        "",
        "| set vs real val | W1 (HU) lower=better | hist. intersection higher=better | FD random features lower=better | log-PSD MSE lower=better |",
        "|---|---|---|---|---|",
    ]
    for name, d in report["distances"].items():
        lines.append(
            f"| {name} | {d['w1_hu']:.1f} | {d['hist_intersection']:.3f} | {d['fd_random_features']:.4g} | {d['log_psd_mse']:.4f} |"
        )
    spread = report.get("sample_spread")
    if spread is not None:
        lines += [
            "",
            f"Sampling spread of the prior's row (std over {BOOTSTRAP_RESAMPLES} bootstrap resamples of its "
            f"{report['n_samples']} samples): W1 +-{spread['w1_hu']:.1f} HU, FD +-{spread['fd_random_features']:.2g}.",
        ]
    loss = report.get("denoising_loss")
    if loss is not None:
        val, train = loss["val"], loss["open train slices (floor row)"]
        lines += [
            "",
            f"UNet denoising loss (training objective, {DENOISING_DRAWS} draws of timesteps and noise, +- standard error): "
            f"val {val['mean']:.5f} +- {val['stderr']:.5f}, open train slices {train['mean']:.5f} +- {train['stderr']:.5f} "
            f"(val / train = {val['mean'] / train['mean']:.2f}).",
        ]
    bands = report.get("denoising_loss_by_band")
    if bands is not None:
        lines += [
            "",
            f"The same loss with t drawn within each band ({DENOISING_DRAWS} draws each):",
            "",
            "| t | val | open train slices | val / train |",
            "|---|---|---|---|",
        ]
        for band, loss in bands.items():
            val, train = loss["val"], loss["open train slices (floor row)"]
            lines.append(
                f"| {band} | {val['mean']:.5f} +- {val['stderr']:.5f} | {train['mean']:.5f} +- {train['stderr']:.5f} "
                f"| {val['mean'] / train['mean']:.2f} |"
            )
    fractions = report.get("tissue_fractions")
    if fractions is not None:
        names = list(TISSUE_RANGES_HU)
        ranges = [f"{name} [{low:g}, {high:g})" for name, (low, high) in TISSUE_RANGES_HU.items()]
        lines += [
            "",
            "Tissue composition: percent of all pixels in each HU range (bone includes dense bone):",
            "",
            "| set | " + " | ".join(ranges) + " |",
            "|---|" + "---|" * len(names),
        ]
        lines += [f"| {k} | " + " | ".join(f"{v[n]:.2f}" for n in names) + " |" for k, v in fractions.items()]
    renoised = report.get("renoised")
    if renoised is not None:
        names = list(TISSUE_RANGES_HU)
        lines += [
            "",
            f"Val slices noised to timestep t and denoised back ({report['sample_steps']}-step DDIM, eta 0): percent of "
            "pixels per HU range as above, and W1 against val (t = 0: the autoencoder's reconstructions):",
            "",
            "| t | " + " | ".join(names) + " | W1 (HU) |",
            "|---|" + "---|" * (len(names) + 1),
        ]
        recon = report["tissue_fractions"]["autoencoder reconstructions of val"]
        recon_w1 = report["distances"]["autoencoder reconstructions of val"]["w1_hu"]
        lines.append("| 0 | " + " | ".join(f"{recon[n]:.2f}" for n in names) + f" | {recon_w1:.1f} |")
        lines += [
            f"| {t} | " + " | ".join(f"{v[n]:.2f}" for n in names) + f" | {v['w1_hu']:.1f} |"
            for t, v in renoised.items()
        ]
    if "strength" in report:
        lines += [
            "",
            "Prior strength (val slices that tuned TV, 30 views, I0 = 1e5, mean over the slices):",
            "",
            "| setting: method | PSNR (dB) | SSIM |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {v['psnr_db']:.2f} | {v['ssim']:.3f} |" for k, v in report["strength"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="npz with images_hu, split, license_class")
    parser.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "prior_quality"))
    parser.add_argument("--png", default=None, help="also write the samples-vs-real PNG here")
    parser.add_argument("--n-samples", type=int, default=48)
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--eta", type=float, default=0.0, help="DDIM stochasticity of the samples (0: deterministic, 1: DDPM-like)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--renoise-levels",
        type=int,
        nargs="+",
        default=None,
        metavar="T",
        help="also noise the val slices to these timesteps and denoise them back (e.g. 100 300 500 700 900)",
    )
    parser.add_argument(
        "--strength", action="store_true", help="also ReSample fast (no final fit) vs TV (minutes on a CPU)"
    )
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = (
        load_default_model(args.device) if args.model is None else LatentDiffusionBundle.load(args.model, args.device)
    )
    val = load_npz_slices(args.data, VALIDATION_SELECTION)
    val_images = val.model_units()
    real_val = model_to_hu(val_images)
    reference = load_npz_slices(args.data, SliceSelection(splits=("train",), license_classes=("open",)))
    pick = torch.randperm(len(reference), generator=torch.Generator().manual_seed(args.seed))[: len(val)]
    train_images = reference.model_units(pick)
    real_train = model_to_hu(train_images)
    val_latents = encode(bundle, val_images.to(args.device))
    train_latents = encode(bundle, train_images.to(args.device))

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return bundle.decode(bundle.encode(x.to(args.device))).cpu()

    ae = autoencoder_metrics(reconstruct, val_images)
    with torch.no_grad():
        recon = torch.cat([model_to_hu(bundle.decode(z).cpu()) for z in val_latents.split(8)])
    g = torch.Generator().manual_seed(args.seed)
    samples = model_to_hu(sample_images(bundle, args.n_samples, args.sample_steps, g, eta=args.eta).cpu())
    noise_z = torch.randn((args.n_samples, *bundle.latent_shape), generator=g)
    with torch.no_grad():
        noise_decoded = torch.cat([model_to_hu(bundle.decode(z.to(args.device)).cpu()) for z in noise_z.split(8)])

    net = random_feature_net()
    report = {
        "model": str(args.model or "resample_med/default_model"),
        "n_val": len(val),
        "n_samples": args.n_samples,
        "sample_steps": args.sample_steps,
        "eta": args.eta,
        "seed": args.seed,
        "device": args.device,
        "autoencoder_val": ae,
        "distances": {
            "DDIM samples (the prior)": distances(samples, real_val, net),
            "real open train slices (floor)": distances(real_train, real_val, net),
            "autoencoder reconstructions of val": distances(recon, real_val, net),
            "N(0, I) latents decoded (trivial baseline)": distances(noise_decoded, real_val, net),
        },
        "tissue_fractions": {
            "real val (the target)": tissue_fractions(real_val),
            "DDIM samples (the prior)": tissue_fractions(samples),
            "real open train slices (floor)": tissue_fractions(real_train),
            "autoencoder reconstructions of val": tissue_fractions(recon),
            "N(0, I) latents decoded (trivial baseline)": tissue_fractions(noise_decoded),
        },
        "sample_spread": bootstrap_spread(samples, real_val, net, args.seed),
        "denoising_loss": {
            "val": denoising_loss(bundle, val_latents),
            "open train slices (floor row)": denoising_loss(bundle, train_latents),
        },
        "denoising_loss_by_band": {
            f"[{low}, {high})": {
                "val": denoising_loss(bundle, val_latents, timesteps=(low, high)),
                "open train slices (floor row)": denoising_loss(bundle, train_latents, timesteps=(low, high)),
            }
            for low, high in NOISE_BANDS
        },
    }
    if args.renoise_levels:
        report["renoised"] = renoised_tissue_fractions(
            bundle, val_images.to(args.device), args.renoise_levels, args.sample_steps, args.seed
        )
    if args.strength:
        report["strength"] = prior_strength(bundle, Path(args.data), args.seed)
    report["seconds"] = time.perf_counter() - t0
    side_by_side_png(samples, real_val, out / "samples_vs_real.png")
    if args.png:
        side_by_side_png(samples, real_val, Path(args.png))
    (out / "prior_quality.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "prior_quality.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
