"""Stage 2: train the latent UNet on precomputed autoencoder latents (Rombach et al. 2022, Eq. 2).

With z_0 = s * mu(x) (scaled posterior mean), t ~ U{0..T-1}, eps ~ N(0, I) and
z_t = sqrt(ab_t) z_0 + sqrt(1 - ab_t) eps, the UNet output f(z_t, t) is regressed on the target of
the schedule's ``prediction_type`` (eps, or v = sqrt(ab_t) eps - sqrt(1 - ab_t) z_0) with the
min-SNR-gamma weighting of Hang et al. 2023 (SNR_t = ab_t / (1 - ab_t)):

    L = E_t [ w_t |f(z_t, t) - target|^2 ],  w_t = min(SNR_t, gamma) / SNR_t        (epsilon)
                                              w_t = min(SNR_t, gamma) / (SNR_t + 1)  (v)

Latents are computed once per run (and cached in ``latents.pt`` keyed by the encoder's weights),
for each pair of a zoom-out level of ``zoom_levels`` and an in-plane rotation of
``rotation_levels_deg`` (the slice shrunk and turned about its centre, air around it: see
``augment.rotate_and_zoom``); horizontal / vertical flips of the latents augment them, and a
level is drawn per sample. With ``dropout`` the UNet's dropout layers (residual blocks and
attention outputs) are active in training steps only: the EMA copy that is validated and shipped
runs without them (Ho et al. 2020 used 0.1 on CIFAR-10; the shipped prior's round 5 used 0.2
against generation 2's memorising of its slices, MODEL_CARD.md). Slices are drawn with patient
balancing (``SliceSet.sampling_weights``). The scale s = 1 / std(mu) is measured on the training latents
unless the UNet continues from a bundle whose encoder is unchanged (then the bundle's s is kept,
since the UNet was trained on it; a decoder-only fine-tuned autoencoder keeps the latent space). An EMA of the UNet is
what ships: with ``keep_best``, the EMA weights with the lowest selection score of the run (the
starting weights of a continued run included), not necessarily the last. The score is the
held-out loss, or with ``select_on="sample_w1"`` the W1 distance between the HU values of a few
DDIM samples (fixed seed) and the val slices: in round 2 the loss alone picked weights whose
samples drifted (MODEL_CARD.md). With ``select_max_loss_rise`` the sample score selects only among
weights whose held-out loss is within that fraction of the lowest loss of the run so far: in round
3 the W1 of 16 samples picked weights whose loss had risen 16% and whose 48 samples were worse.
The held-out loss is always weighted with ``HELD_OUT_MIN_SNR_GAMMA`` (whatever gamma trains), so
that it stays comparable across runs and rounds. The run folder holds
``checkpoint.pt``, ``best.pt``, ``loss_log.jsonl``, sample grids and ``model/`` (the full bundle).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DModel
from tqdm.auto import tqdm

from resample_med.config import resolve_device
from resample_med.models.bundle import LatentDiffusionBundle, load_pretrained_strict
from resample_med.models.config import ArchitectureConfig, AutoencoderArchitecture, PriorConfig, get_architecture
from resample_med.models.networks import apply_unet, build_scheduler, build_unet, count_parameters
from resample_med.models.sample import sample_images
from resample_med.training.augment import rotate_and_zoom
from resample_med.training.autoencoder import encoder_state_hash
from resample_med.training.checkpoint import (
    BestWeights,
    TrainState,
    resume_from_checkpoint,
    save_atomically,
    save_checkpoint,
)
from resample_med.training.data import (
    VALIDATION_SELECTION,
    SliceSelection,
    SliceSet,
    load_slices,
    load_validation_slices,
)
from resample_med.training.ema import EMA
from resample_med.training.grow import deepen_bundle
from resample_med.training.loss_log import LossLog
from resample_med.training.runtime import autocast, resolve_cpu_bf16, write_json
from resample_med.training.schedule import Budget, LRSchedule
from resample_med.training.validation import save_grid_png, wasserstein1_hu
from resample_med.units import model_to_hu

MODEL_DIR = "model"
LATENT_CACHE = "latents.pt"
SELECTION_SCORES = ("val_loss", "sample_w1")


HELD_OUT_MIN_SNR_GAMMA = 5.0
"""Gamma of the held-out loss (``validation_loss``) of every run, and the presets' training gamma."""


@dataclass(frozen=True)
class DiffusionTrainConfig:
    """Every knob of latent UNet training; see ``DIFFUSION_PRESETS``.

    ``autoencoder``: a folder holding ``autoencoder/`` (stage-1 run or bundle); ``init_from``: a
    bundle to continue (its UNet, and its autoencoder unless ``autoencoder`` is also given).
    ``patient_balance``: exponent of the per-patient slice weights; ``zoom_levels``: zoom-out
    factors (1 = as stored) and ``rotation_levels_deg``: in-plane rotations in degrees (0 = as
    stored); the latents of every (zoom, rotation) pair are precomputed and drawn uniformly; ``cpu_bf16``: bf16
    autocast for training steps on the CPU (None: where the CPU has native bf16); ``keep_best``: ship the EMA weights with the lowest
    selection score (checked every ``val_every`` steps) instead of the last ones; ``select_on``:
    the score, one of ``SELECTION_SCORES`` (``sample_w1`` draws ``select_samples`` DDIM samples of
    ``select_sample_steps`` steps at each check); ``select_max_loss_rise``: with ``sample_w1``,
    weights whose held-out loss exceeds the run's lowest so far by more than this fraction are not
    eligible (None: no such limit); ``dropout``: probability of the UNet's dropout layers in
    training steps (the shipped EMA weights run without dropout); ``min_snr_gamma``: gamma of the
    training loss's weighting (module docstring; larger: more weight on low-noise steps);
    ``deepen``: with ``init_from``, first add one identity-initialised layer to every UNet block
    (``training/grow.py``), so training continues the old prior with more capacity.
    """

    data: tuple[str, ...] = ()
    out_dir: str = "runs/diffusion"
    autoencoder: str | None = None
    init_from: str | None = None
    architecture: str = "cpu"
    selection: SliceSelection = SliceSelection()
    val_selection: SliceSelection = VALIDATION_SELECTION
    batch_size: int = 32
    lr: float = 5e-4
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    min_snr_gamma: float = HELD_OUT_MIN_SNR_GAMMA
    hflip_prob: float = 0.5
    vflip_prob: float = 0.0  # 0.5 put the patient table above the body in some samples of the first model
    max_steps: int = 200_000
    max_minutes: float | None = None
    log_every: int = 10
    val_every: int = 500
    sample_every: int = 5000
    n_samples: int = 16
    sample_steps: int = 50
    checkpoint_every: int = 250
    encode_batch_size: int = 16
    half_weights: bool = False
    patient_balance: float = 0.0
    zoom_levels: tuple[float, ...] = (1.0,)
    rotation_levels_deg: tuple[float, ...] = (0.0,)
    cpu_bf16: bool | None = False
    keep_best: bool = True
    select_on: str = "val_loss"
    select_samples: int = 16
    select_sample_steps: int = 25
    select_max_loss_rise: float | None = None
    dropout: float = 0.0
    deepen: bool = False
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    resume: bool = False
    progress_bar: bool = True


DIFFUSION_PRESETS: dict[str, DiffusionTrainConfig] = {
    "tiny": DiffusionTrainConfig(
        architecture="tiny",
        batch_size=8,
        lr=2e-3,
        warmup_steps=2,
        max_steps=20,
        log_every=1,
        val_every=10,
        sample_every=20,
        n_samples=4,
        sample_steps=3,
        select_samples=4,
        select_sample_steps=3,
        checkpoint_every=10,
        progress_bar=False,
    ),
    "cpu": DiffusionTrainConfig(architecture="cpu", batch_size=32, lr=1e-3, warmup_steps=100, ema_decay=0.995),
    # Continue a shipped UNet: bf16 autocast where the CPU has it natively, patient-balanced, zoom-out level 0.8 beside the
    # slices as stored (benchmarks/results/prior_recipe.md); validated every 250 steps so that the
    # best EMA weights ship. Round 2 added levels 0.9 and 0.7: lower val loss, but samples drifted
    # (W1 of HU 52 -> 128; MODEL_CARD.md), so they are not in the preset, and the weights are
    # selected on their samples' W1, not on the loss.
    "cpu_continue": DiffusionTrainConfig(
        architecture="cpu",
        batch_size=32,
        lr=1e-3,
        warmup_steps=100,
        ema_decay=0.995,
        cpu_bf16=None,  # where the CPU has native bf16 (runtime.resolve_cpu_bf16)
        patient_balance=0.5,
        zoom_levels=(1.0, 0.8),
        val_every=250,
        select_on="sample_w1",
    ),
    "gpu": DiffusionTrainConfig(architecture="full", batch_size=128, lr=4e-4, sample_every=2000, half_weights=True),
}


def _autoencoder_architecture(model: AutoencoderKL) -> AutoencoderArchitecture:
    """The architecture dataclass of a loaded autoencoder (its config is the truth)."""
    c = model.config
    return AutoencoderArchitecture(
        block_out_channels=tuple(c.block_out_channels),
        layers_per_block=int(c.layers_per_block),
        latent_channels=int(c.latent_channels),
        norm_num_groups=int(c.norm_num_groups),
        mid_block_attention=bool(c.mid_block_add_attention),
    )


@torch.no_grad()
def encode_latents(
    autoencoder: AutoencoderKL,
    slices: SliceSet,
    device: torch.device,
    batch_size: int,
    zoom: float = 1.0,
    rotation_deg: float = 0.0,
) -> torch.Tensor:
    """Unscaled posterior means mu(x) of every slice zoomed out by ``zoom`` and turned by
    ``rotation_deg`` degrees: (N, C, h, w) float32 on the CPU."""
    autoencoder.eval()
    out = []
    for i in range(0, len(slices), batch_size):
        x = slices.model_units(slice(i, i + batch_size)).to(device)
        if zoom != 1.0 or rotation_deg != 0.0:
            n = x.shape[0]
            angle = torch.full((n,), math.radians(rotation_deg), device=device)
            x = rotate_and_zoom(x, angle, torch.full((n,), zoom, device=device))
        with autocast(device):
            out.append(autoencoder.encode(x).latent_dist.mean.float().cpu())
    return torch.cat(out)


def _cached_latents(
    run_dir: Path,
    autoencoder: AutoencoderKL,
    slices: SliceSet,
    device: torch.device,
    batch_size: int,
    levels: list[tuple[float, float]],
    progress_bar: bool,
) -> torch.Tensor:
    """``encode_latents`` at each (zoom, rotation in degrees) level, (L, N, C, h, w), cached in
    ``run_dir/latents.pt``.

    The cache holds one tensor per (encoder weights, slices, level), so adding a level to a run
    encodes only the new level. It is saved after each level: on a CPU one level of 1,486 slices
    takes minutes, and a run stopped while encoding keeps the levels it finished.
    """
    prefix = f"{encoder_state_hash(autoencoder)}:{len(slices)}:{int(slices.hu.sum())}"

    def key(zoom: float, rotation_deg: float) -> str:
        return f"{prefix}:{zoom}" if rotation_deg == 0.0 else f"{prefix}:{zoom}:rotate{rotation_deg}"

    path = run_dir / LATENT_CACHE
    cached: dict[str, torch.Tensor] = {}
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True).get("levels", {})
    missing = [level for level in levels if key(*level) not in cached]
    for zoom, rotation_deg in tqdm(missing, desc="encoding latent levels", disable=not progress_bar):
        cached[key(zoom, rotation_deg)] = encode_latents(autoencoder, slices, device, batch_size, zoom, rotation_deg)
        save_atomically({"levels": cached}, path)
    return torch.stack([cached[key(*level)] for level in levels])


def latent_levels(cfg: DiffusionTrainConfig) -> list[tuple[float, float]]:
    """The (zoom, rotation in degrees) pairs whose latents a run trains on, every zoom level with every
    rotation, in the configured order (a new latent scale is measured on the first pair's latents)."""
    return [(zoom, rotation) for zoom in cfg.zoom_levels for rotation in cfg.rotation_levels_deg]


def diffusion_loss(
    unet: UNet2DModel,
    scheduler,
    z0: torch.Tensor,
    generator: torch.Generator,
    min_snr_gamma: float,
    patch_size: int = 1,
    cpu_bf16: bool = False,
    timesteps: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Min-SNR-weighted denoising loss (module docstring) of a batch of scaled latents z0 (B, C, h, w),
    t drawn uniformly from ``timesteps`` = [low, high) (None: every training timestep)."""
    b = z0.shape[0]
    low, high = timesteps if timesteps is not None else (0, scheduler.config.num_train_timesteps)
    t = torch.randint(low, high, (b,), generator=generator).to(z0.device)
    eps = torch.randn(z0.shape, generator=generator).to(z0.device)
    ab = scheduler.alphas_cumprod.to(z0.device)[t]
    zt = scheduler.add_noise(z0, eps, t)
    snr = ab / (1.0 - ab)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(z0, eps, t)
        weight = snr.clamp(max=min_snr_gamma) / (snr + 1.0)
    else:
        target = eps
        weight = snr.clamp(max=min_snr_gamma) / snr
    with autocast(z0.device, cpu_bf16):
        pred = apply_unet(unet, zt, t, patch_size)
    per_sample = (pred.float() - target).pow(2).flatten(1).mean(1)
    return (weight * per_sample).mean()


def set_dropout(unet: torch.nn.Module, p: float) -> None:
    """Set the probability of every dropout layer of ``unet`` (active in train mode only)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"diffusion training: --dropout must be in [0, 1), got {p}")
    for module in unet.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def _flip(z: torch.Tensor, hflip_prob: float, vflip_prob: float, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips of latents (B, C, h, w)."""
    b = z.shape[0]
    for dim, prob in ((-1, hflip_prob), (-2, vflip_prob)):
        flip = (torch.rand(b, generator=generator) < prob).to(z.device)[:, None, None, None]
        z = torch.where(flip, z.flip(dim), z)
    return z


@torch.no_grad()
def validation_loss(
    unet: UNet2DModel,
    scheduler,
    z0: torch.Tensor,
    seed: int,
    min_snr_gamma: float,
    batch_size: int,
    patch_size: int = 1,
    timesteps: tuple[int, int] | None = None,
) -> float:
    """The training loss on held-out latents with fixed noise and timesteps (comparable across steps);
    ``timesteps``: draw t from [low, high) only (``diffusion_loss``)."""
    generator = torch.Generator().manual_seed(seed)
    losses = [
        diffusion_loss(
            unet, scheduler, z0[i : i + batch_size], generator, min_snr_gamma, patch_size, timesteps=timesteps
        )
        * min(batch_size, len(z0) - i)
        for i in range(0, len(z0), batch_size)
    ]
    return float(torch.stack(losses).sum() / len(z0))


def _prepare_models(cfg: DiffusionTrainConfig, device: torch.device) -> tuple[LatentDiffusionBundle, bool]:
    """The bundle to train (UNet random or from ``init_from``) and whether its scale must be measured."""
    if cfg.deepen and cfg.init_from is None:
        raise ValueError("--deepen grows a trained UNet: give the model to grow with --init-from")
    if cfg.init_from is not None:
        bundle = LatentDiffusionBundle.load(cfg.init_from)
        if cfg.deepen:
            bundle = deepen_bundle(bundle)
        if cfg.autoencoder is None:
            return bundle, False
        new_ae = load_pretrained_strict(AutoencoderKL, _autoencoder_folder(cfg.autoencoder))
        if encoder_state_hash(new_ae) == encoder_state_hash(bundle.autoencoder):
            # same latent space (e.g. a decoder-only fine-tune): keep the UNet's scale
            return LatentDiffusionBundle(new_ae, bundle.unet, bundle.scheduler, bundle.config), False
        arch = dataclasses.replace(bundle.config.architecture, autoencoder=_autoencoder_architecture(new_ae))
        return LatentDiffusionBundle(new_ae, bundle.unet, bundle.scheduler, PriorConfig(architecture=arch)), True
    if cfg.autoencoder is None:
        raise ValueError(
            "diffusion training needs --autoencoder (a stage-1 run folder) or --init-from (a model folder)"
        )
    autoencoder = load_pretrained_strict(AutoencoderKL, _autoencoder_folder(cfg.autoencoder))
    preset = get_architecture(cfg.architecture)
    arch = ArchitectureConfig(
        name=preset.name,
        image_size=preset.image_size,
        autoencoder=_autoencoder_architecture(autoencoder),
        unet=preset.unet,
        schedule=preset.schedule,
    )
    unet = build_unet(arch, seed=cfg.seed)
    return LatentDiffusionBundle(
        autoencoder, unet, build_scheduler(arch.schedule), PriorConfig(architecture=arch)
    ), True


def _autoencoder_folder(path: str) -> Path:
    """``path/autoencoder`` when it exists, else ``path``."""
    p = Path(path)
    return p / "autoencoder" if (p / "autoencoder").is_dir() else p


def _autoencoder_history(cfg: DiffusionTrainConfig, bundle: LatentDiffusionBundle) -> dict[str, Any]:
    """The autoencoder's training summary: its stage-1 run's summary.json, else the bundle's record."""
    if cfg.autoencoder is not None:
        summary = Path(cfg.autoencoder) / "summary.json"
        return json.loads(summary.read_text()) if summary.is_file() else {}
    return dict(bundle.config.training.get("autoencoder", {}))


def train_diffusion(cfg: DiffusionTrainConfig) -> dict[str, Any]:
    """Train (or resume / continue) the latent UNet; saves the bundle to ``out_dir/model``."""
    if cfg.select_on not in SELECTION_SCORES:
        raise ValueError(f"diffusion training: --select-on must be one of {SELECTION_SCORES}, got {cfg.select_on!r}")
    device = resolve_device(cfg.device)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    run_dir = Path(cfg.out_dir)
    cpu_bf16 = resolve_cpu_bf16(cfg.cpu_bf16)
    cfg = dataclasses.replace(cfg, cpu_bf16=cpu_bf16)  # as run, in train_config.json
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "train_config.json", dataclasses.asdict(cfg))

    bundle, measure_scale = _prepare_models(cfg, device)
    bundle.to(device)
    data = load_slices(cfg.data, cfg.selection)
    levels = latent_levels(cfg)
    latents = _cached_latents(
        run_dir, bundle.autoencoder, data, device, cfg.encode_batch_size, levels, cfg.progress_bar
    )
    scale = 1.0 / float(latents[0].std()) if measure_scale else bundle.latent_scale_factor
    bundle.set_latent_scale_factor(scale)
    z_train = latents * scale
    val = load_validation_slices(cfg.data, cfg.val_selection)
    val_z = None if val is None else encode_latents(bundle.autoencoder, val, device, cfg.encode_batch_size) * scale
    val_hu = None if val is None else model_to_hu(val.model_units())

    unet = bundle.unet.train().requires_grad_(True)
    set_dropout(unet, cfg.dropout)
    patch = bundle.config.architecture.unet.patch_size
    scheduler = bundle.scheduler
    ema = EMA(unet, cfg.ema_decay)  # an eval-mode copy: validated and shipped without dropout
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    step, train_seconds = 0, 0.0
    if cfg.resume:
        step, train_seconds = resume_from_checkpoint(run_dir, {"unet": unet, "ema": ema}, optimizer, generator)

    log = LossLog(run_dir)
    budget = Budget(step, cfg.max_steps, cfg.max_minutes)
    schedule = LRSchedule(cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
    start_step = step

    def total_seconds() -> float:
        return train_seconds + budget.elapsed

    def checkpoint() -> None:
        save_checkpoint(
            run_dir,
            TrainState(
                step,
                total_seconds(),
                {"unet": unet.state_dict(), "ema": ema.state_dict()},
                optimizer.state_dict(),
                generator.get_state(),
                {"latent_scale_factor": scale},
            ),
        )

    def sample_grid() -> Path:
        shipped = LatentDiffusionBundle(bundle.autoencoder, ema.model, scheduler, bundle.config)
        images = sample_images(shipped, cfg.n_samples, cfg.sample_steps, torch.Generator().manual_seed(cfg.seed))
        return save_grid_png(model_to_hu(images.cpu()), run_dir / f"samples_step{step:07d}.png")

    kept = BestWeights(run_dir, cfg.resume, enabled=cfg.keep_best)
    lowest_loss = min((r["loss"] for r in log.read("val")), default=float("inf")) if cfg.resume else float("inf")

    def sample_w1() -> float:
        """W1 of HU between ``select_samples`` EMA samples (fixed seed) and the val slices."""
        assert val_hu is not None
        shipped = LatentDiffusionBundle(bundle.autoencoder, ema.model, scheduler, bundle.config)
        generator = torch.Generator().manual_seed(cfg.seed + 1)
        images = sample_images(shipped, cfg.select_samples, cfg.select_sample_steps, generator)
        return wasserstein1_hu(model_to_hu(images.cpu()), val_hu)

    def validate() -> None:
        """Log the EMA val loss (and sample W1); with ``keep_best``, keep the weights when their
        selection score is the run's lowest."""
        nonlocal lowest_loss
        assert val_z is not None
        loss = validation_loss(
            ema.model, scheduler, val_z.to(device), cfg.seed, HELD_OUT_MIN_SNR_GAMMA, cfg.batch_size, patch
        )
        lowest_loss = min(lowest_loss, loss)
        score = loss if cfg.select_on == "val_loss" else sample_w1()
        eligible = cfg.select_max_loss_rise is None or loss <= lowest_loss * (1.0 + cfg.select_max_loss_rise)
        extra = {} if cfg.select_on == "val_loss" else {cfg.select_on: score, "eligible": eligible}
        log.write(step, "val", loss=loss, ema=True, **extra)
        if eligible:
            kept.offer(step, score, loss, ema.model)

    if val_z is not None and kept.enabled and cfg.init_from is not None and kept.best is None:
        validate()  # the weights this run continues from compete too
    bar = tqdm(total=cfg.max_steps, initial=step, desc="diffusion", disable=not cfg.progress_bar)
    while not budget.done(step):
        lr = schedule(step - start_step, budget.progress(step))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = data.draw(cfg.batch_size, cfg.patient_balance, generator)
        level = (
            torch.randint(0, len(levels), (cfg.batch_size,), generator=generator)
            if len(levels) > 1
            else torch.zeros(cfg.batch_size, dtype=torch.long)
        )
        z0 = _flip(z_train[level, index], cfg.hflip_prob, cfg.vflip_prob, generator).to(device)
        loss = diffusion_loss(unet, scheduler, z0, generator, cfg.min_snr_gamma, patch, cpu_bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        optimizer.step()
        ema.update(unet)
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0:
            log.write(step, "train", loss=loss.item(), lr=lr, seconds=total_seconds())
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.checkpoint_every == 0:
            checkpoint()
        if val_z is not None and step % cfg.val_every == 0:
            validate()
        if step % cfg.sample_every == 0:
            sample_grid()
    bar.close()
    checkpoint()
    if val_z is not None and step % cfg.val_every != 0:
        validate()  # the last weights compete too
    selected_step = kept.restore(ema.model, step)
    best = kept.best

    bundle.unet = ema.model
    summary: dict[str, Any] = {
        "steps": step,
        "steps_this_run": step - start_step,
        "train_seconds": total_seconds(),
        "batch_size": cfg.batch_size,
        "unet_parameters": count_parameters(ema.model),
        "deepened": cfg.deepen,  # the UNet grew by one layer per block at this run's start
        "autoencoder_parameters": count_parameters(bundle.autoencoder),
        "latent_scale_factor": scale,
        "device": str(device),
        "data": data.summary,
    }
    if val_z is not None:
        summary["selected_step"] = selected_step
        summary["selected_on"] = cfg.select_on
        if best is not None:
            summary["selection_score"] = best.score
        # with keep_best the shipped weights are the best ones, whose loss was just measured
        summary["val_loss_ema"] = (
            best.val_loss
            if best is not None
            else validation_loss(
                ema.model, scheduler, val_z.to(device), cfg.seed, HELD_OUT_MIN_SNR_GAMMA, cfg.batch_size, patch
            )
        )
    training = {"autoencoder": _autoencoder_history(cfg, bundle), "diffusion": summary}
    if cfg.init_from is not None:
        training["continued_from"] = bundle.config.training
    # the weights changed: metrics measured on the bundle this run started from no longer hold
    bundle.config = dataclasses.replace(bundle.config, data=data.summary, training=training, metrics={})
    bundle.save(run_dir / MODEL_DIR, half=cfg.half_weights)
    summary["samples_png"] = str(sample_grid())
    write_json(run_dir / "summary.json", summary)
    return summary
