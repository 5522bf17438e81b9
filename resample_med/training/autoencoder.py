"""Stage 1: train the 1-channel ``AutoencoderKL`` on CT slices (Rombach et al. 2022, Sec. 3.1).

Loss per batch of (augmented, cropped) slices x in model units, with posterior q(z|x) = N(mu, s^2):

    L = |D(z) - x|_1 + kl_weight * KL(q(z|x) || N(0, I)),   z ~ q(z|x)

The network is fully convolutional (no mid-block attention), so it can be trained on random crops,
but its GroupNorm layers normalise over the whole field of view: statistics of a 64x64 crop differ
from those of a 256x256 slice. *Measured* here: an autoencoder trained 2,250 steps on 64x64 crops
scored 29.5 dB on whole val slices but 34.0 dB when the same slices were coded as 64x64 tiles. So
crops serve only as a cheap warm start (``"crop_warmup"`` preset) and the final phase must train on
whole slices (``"cpu"`` / ``"gpu"`` presets, ``crop_size=None``).

With ``ema_decay`` set, an exponential moving average of the weights is what is validated and
saved; with ``keep_best``, the validated weights with the highest val PSNR of the run ship (the
starting weights of a continued run compete), held in ``best.pt`` meanwhile: a decoder fine-tune
first loses PSNR while a fresh optimizer warms up (round 2: -0.5 dB at step 1,000) and its last
weights are not always its best (39.88 dB at step 3,000, 39.83 at 4,000). The run folder holds
``checkpoint.pt`` (resumable), ``best.pt``, ``loss_log.jsonl``, ``train_config.json`` and
``autoencoder/`` (diffusers ``save_pretrained``: the shipped weights at the end of the run).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from resample_med.config import resolve_device
from resample_med.models.bundle import load_pretrained_strict, weights_digest
from resample_med.models.config import get_architecture
from resample_med.models.networks import build_autoencoder, count_parameters
from resample_med.training.augment import AugmentConfig
from resample_med.training.augment import augment as augment_batch
from resample_med.training.checkpoint import BestWeights, TrainState, resume_from_checkpoint, save_checkpoint
from resample_med.training.data import (
    VALIDATION_SELECTION,
    SliceSelection,
    SliceSet,
    load_slices,
    load_validation_slices,
)
from resample_med.training.ema import EMA
from resample_med.training.loss_log import LossLog
from resample_med.training.runtime import autocast, resolve_cpu_bf16, write_json
from resample_med.training.schedule import Budget, LRSchedule
from resample_med.training.validation import autoencoder_metrics

AUTOENCODER_DIR = "autoencoder"


@dataclass(frozen=True)
class AutoencoderTrainConfig:
    """Every knob of autoencoder training; see ``AUTOENCODER_PRESETS``.

    ``patient_balance``: exponent of the per-patient slice weights (``SliceSet.sampling_weights``).
    ``trainable``: ``"all"``, or ``"decoder"`` to fine-tune the decoder only: the encoder (and so
    the latent space a trained UNet lives in) stays fixed, so a continued bundle keeps its UNet.
    ``cpu_bf16``: bf16 autocast for training steps on the CPU (validation stays fp32; None: where
    the CPU has native bf16, ``runtime.resolve_cpu_bf16``).
    ``ema_decay``: decay of the weights' moving average (None: no average, the live weights are
    validated and saved). ``keep_best``: ship the validated weights with the highest val PSNR.
    """

    data: tuple[str, ...] = ()
    out_dir: str = "runs/autoencoder"
    architecture: str = "cpu"
    selection: SliceSelection = SliceSelection()
    val_selection: SliceSelection = VALIDATION_SELECTION
    augment: AugmentConfig = AugmentConfig(crop_size=64)
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    kl_weight: float = 1e-6
    grad_clip: float = 1.0
    max_steps: int = 100_000
    max_minutes: float | None = None
    log_every: int = 10
    val_every: int = 1000
    checkpoint_every: int = 250
    val_batch_size: int = 8
    patient_balance: float = 0.0
    trainable: str = "all"
    cpu_bf16: bool | None = False
    ema_decay: float | None = None
    keep_best: bool = False
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    resume: bool = False
    init_from: str | None = None
    progress_bar: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


AUTOENCODER_PRESETS: dict[str, AutoencoderTrainConfig] = {
    "tiny": AutoencoderTrainConfig(
        architecture="tiny",
        augment=AugmentConfig(crop_size=None),
        batch_size=8,
        lr=5e-3,
        warmup_steps=2,
        max_steps=20,
        log_every=1,
        val_every=10,
        checkpoint_every=10,
        progress_bar=False,
    ),
    "crop_warmup": AutoencoderTrainConfig(
        architecture="cpu", augment=AugmentConfig(crop_size=64), batch_size=16, lr=1e-3
    ),
    "cpu": AutoencoderTrainConfig(architecture="cpu", augment=AugmentConfig(crop_size=None), batch_size=2, lr=5e-4),
    # Continue a shipped bundle's autoencoder without moving its latent space (so its UNet stays
    # valid): decoder only, bf16 autocast, patient-balanced, zoom-outs to 0.8 (benchmarks/results/prior_recipe.md);
    # a gentler learning rate than generation 2's 2e-4 with a weight average, and the best
    # validated weights ship (round 2 lost 0.5 dB to the restart's warm-up: MODEL_CARD.md).
    "cpu_continue": AutoencoderTrainConfig(
        architecture="cpu",
        augment=AugmentConfig(crop_size=None, zoom_range=(0.8, 1.0)),
        batch_size=2,
        lr=1e-4,
        trainable="decoder",
        cpu_bf16=None,  # where the CPU has native bf16 (runtime.resolve_cpu_bf16)
        patient_balance=0.5,
        ema_decay=0.999,
        keep_best=True,
        val_every=500,
    ),
    "gpu": AutoencoderTrainConfig(
        architecture="full", augment=AugmentConfig(crop_size=None), batch_size=16, lr=5e-4, val_every=500
    ),
}


def load_autoencoder(folder: str | Path) -> AutoencoderKL:
    """A strict, offline ``AutoencoderKL`` from ``folder/autoencoder`` (a bundle or run folder) or ``folder``."""
    folder = Path(folder)
    return load_pretrained_strict(
        AutoencoderKL, folder / AUTOENCODER_DIR if (folder / AUTOENCODER_DIR).is_dir() else folder
    )


def _reconstruct(model: AutoencoderKL, device: torch.device):
    """Deterministic reconstruction x -> D(mean of q(z|x)) for validation."""

    def run(x: torch.Tensor) -> torch.Tensor:
        with autocast(device):
            z = model.encode(x.to(device)).latent_dist.mean
            return model.decode(z).sample

    return run


def validate_autoencoder(
    model: AutoencoderKL, val: SliceSet, device: torch.device, batch_size: int
) -> dict[str, float]:
    """PSNR / HU-RMSE of the posterior-mean reconstruction of every validation slice."""
    was_training = model.training
    model.eval()
    metrics = autoencoder_metrics(_reconstruct(model, device), val.model_units(), batch_size)
    model.train(was_training)
    return metrics


ENCODER_PARTS = ("encoder", "quant_conv")
"""The submodules of ``AutoencoderKL`` that map an image to its latent posterior."""

TRAINABLE_PARTS = ("all", "decoder")


def encoder_state_hash(model: AutoencoderKL) -> str:
    """SHA-1 of the encoder's weights: two autoencoders with equal hashes have the same latent space
    (it keys the latent caches of training runs, so its bytes must not change)."""
    return weights_digest(model, ENCODER_PARTS, "sha1")


def trainable_parameters(model: AutoencoderKL, trainable: str) -> list[torch.nn.Parameter]:
    """The parameters to optimise; with ``"decoder"`` the encoder parts are frozen."""
    if trainable not in TRAINABLE_PARTS:
        raise ValueError(f"trainable={trainable!r}: choose one of {', '.join(TRAINABLE_PARTS)}")
    if trainable == "decoder":
        for name in ENCODER_PARTS:
            getattr(model, name).requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def train_autoencoder(cfg: AutoencoderTrainConfig) -> dict[str, Any]:
    """Train (or resume / continue) an autoencoder; returns a summary with the final val metrics."""
    device = resolve_device(cfg.device)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    run_dir = Path(cfg.out_dir)
    cpu_bf16 = resolve_cpu_bf16(cfg.cpu_bf16)
    cfg = dataclasses.replace(cfg, cpu_bf16=cpu_bf16)  # as run, in train_config.json
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "train_config.json", dataclasses.asdict(cfg))

    data = load_slices(cfg.data, cfg.selection)
    val = load_validation_slices(cfg.data, cfg.val_selection)
    if cfg.init_from is not None:
        model = load_autoencoder(cfg.init_from)
    else:
        model = build_autoencoder(get_architecture(cfg.architecture), seed=cfg.seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(trainable_parameters(model, cfg.trainable), lr=cfg.lr, weight_decay=0.0)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    # the weights validated, selected and saved (the average is a deep copy of the autoencoder)
    shipped = cast(AutoencoderKL, ema.model) if ema is not None else model
    generator = torch.Generator().manual_seed(cfg.seed)
    step, train_seconds = 0, 0.0
    models: dict[str, Any] = {"autoencoder": model} | ({"ema": ema} if ema is not None else {})
    if cfg.resume:
        step, train_seconds = resume_from_checkpoint(run_dir, models, optimizer, generator)

    log = LossLog(run_dir)
    budget = Budget(step, cfg.max_steps, cfg.max_minutes)
    schedule = LRSchedule(cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
    start_step = step

    def checkpoint() -> None:
        save_checkpoint(
            run_dir,
            TrainState(
                step,
                train_seconds + budget.elapsed,
                {name: m.state_dict() for name, m in models.items()},
                optimizer.state_dict(),
                generator.get_state(),
            ),
        )
        shipped.save_pretrained(run_dir / AUTOENCODER_DIR)

    kept = BestWeights(run_dir, cfg.resume, enabled=cfg.keep_best)
    scored: dict[int, dict[str, float]] = {}  # val metrics of the shipped weights by step, this run

    def validate() -> None:
        """Log the val metrics of the shipped weights; with ``keep_best``, keep them when their PSNR
        is the run's highest (the score is -PSNR: lower is better)."""
        assert val is not None
        scored[step] = validate_autoencoder(shipped, val, device, cfg.val_batch_size)
        log.write(step, "val", ema=ema is not None, **scored[step])
        kept.offer(step, -scored[step]["psnr_db"], -scored[step]["psnr_db"], shipped)

    if val is not None and kept.enabled and cfg.init_from is not None and kept.best is None:
        validate()  # the weights this run continues from compete too
    bar = tqdm(total=cfg.max_steps, initial=step, desc="autoencoder", disable=not cfg.progress_bar)
    while not budget.done(step):
        lr = schedule(step - start_step, budget.progress(step))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = data.draw(cfg.batch_size, cfg.patient_balance, generator)
        x = augment_batch(data.model_units(index).to(device), cfg.augment, generator)
        with autocast(device, cpu_bf16), torch.set_grad_enabled(cfg.trainable == "all"):
            posterior = model.encode(x).latent_dist
        with autocast(device, cpu_bf16):
            rec = model.decode(posterior.sample(generator=generator)).sample
        l1 = (rec.float() - x).abs().mean()
        kl = posterior.kl().float().mean() / x[0].numel()
        loss = l1 + cfg.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0:
            log.write(
                step,
                "train",
                loss=loss.item(),
                l1=l1.item(),
                kl=kl.item(),
                lr=lr,
                seconds=train_seconds + budget.elapsed,
            )
            bar.set_postfix(l1=f"{l1.item():.4f}")
        if step % cfg.checkpoint_every == 0:
            checkpoint()
        if val is not None and step % cfg.val_every == 0:
            validate()
    bar.close()
    checkpoint()
    if val is not None and step not in scored:
        validate()  # the last weights compete too
    selected_step = kept.restore(shipped, step)
    if selected_step != step:
        shipped.save_pretrained(run_dir / AUTOENCODER_DIR)
    summary: dict[str, Any] = {
        "steps": step,
        "steps_this_run": step - start_step,
        "train_seconds": train_seconds + budget.elapsed,
        "parameters": count_parameters(model),
        "device": str(device),
        "data": data.summary,
        "ema_decay": cfg.ema_decay,
    }
    if val is not None:
        summary["selected_step"] = selected_step
        summary["val"] = scored.get(selected_step) or validate_autoencoder(shipped, val, device, cfg.val_batch_size)
    write_json(run_dir / "summary.json", summary)
    return summary
