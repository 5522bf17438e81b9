"""The latent diffusion prior as one object and one folder (Rombach et al. 2022).

``LatentDiffusionBundle`` implements the ``LatentPrior`` protocol of ``resample_med.sampling.prior``:

- ``encode(x)``: image x (B, 1, H, W) in model units -> z = s * mu(x), (B, C, H/f, W/f), where mu is
  the mean of the autoencoder's posterior q(z|x) and s the latent scale factor (``1 / std`` of the
  unscaled latents on the training data, stored in the autoencoder's config ``scaling_factor``);
- ``decode(z)``: D(z / s) -> (B, 1, H, W) model units, differentiable in z;
- ``predict_noise(z_t, t)``: epsilon_theta(z_t, t). A v-prediction UNet (Salimans & Ho 2022) is
  converted with ``eps = sqrt(ab_t) v + sqrt(1 - ab_t) z_t``;
- ``scheduler``: a ``DDIMScheduler`` over T = 1000 training steps.

On disk (``save``/``load``) a bundle is a folder::

    autoencoder/   diffusers AutoencoderKL (config.json + diffusion_pytorch_model.safetensors)
    unet/          diffusers UNet2DModel
    scheduler/     diffusers DDIMScheduler config
    prior_config.json   PriorConfig: HU normalisation, scale factor, data and training summary

Weights are stored in fp16 when ``half=True`` (to keep every file under 16 MiB) and always loaded
as fp32. Loading is strict (a missing or unexpected weight raises) and offline.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel

from resample_med.models.config import ArchitectureConfig, PriorConfig, get_architecture
from resample_med.models.networks import apply_unet, build_autoencoder, build_scheduler, build_unet
from resample_med.quiet import third_party_quiet

AUTOENCODER_DIR = "autoencoder"
UNET_DIR = "unet"
SCHEDULER_DIR = "scheduler"
PRIOR_CONFIG_NAME = "prior_config.json"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "default_model"
"""Where the shipped default weights live (inside the installed package)."""

CPU_AUTOENCODER_CHUNK = 1
"""Images per autoencoder call on a CPU. On a CPU an autoencoder call costs more per image the
larger its batch (256^2 activations of a batch overflow the caches and are freshly allocated):
measured on 2 cores, decoding 64 latents one at a time is about 2x faster than in one batch, and
the peak memory falls with it (benchmarks/results/speed_cpu.md). GPUs run the whole batch."""

MAX_SHARD_SIZE = "15MB"
"""Largest safetensors file written by ``save`` (shards under 16 MiB pass the file-size limits of common artifact stores)."""


def load_pretrained_strict(cls: Any, folder: Path) -> Any:
    """``cls.from_pretrained(folder)`` offline in fp32; raises if any weight is missing or unexpected."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: config.json is missing (incomplete model folder)")
    model, info = cls.from_pretrained(
        folder, local_files_only=True, torch_dtype=torch.float32, output_loading_info=True, low_cpu_mem_usage=False
    )
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise ValueError(f"{folder}: weights do not match the config: {problems}")
    return model.float()  # fp16-stored weights -> fp32


class LatentDiffusionBundle(torch.nn.Module):
    """Autoencoder + latent UNet + DDIM scheduler + ``PriorConfig``; see the module docstring."""

    def __init__(
        self, autoencoder: AutoencoderKL, unet: UNet2DModel, scheduler: DDIMScheduler, config: PriorConfig
    ) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.unet = unet
        self.scheduler = scheduler
        self.config = config
        self.set_latent_scale_factor(config.latent_scale_factor)
        self.eval()
        self.requires_grad_(False)

    # --- shape information -------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Side of the square model grid in pixels."""
        return self.config.architecture.image_size

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent."""
        return self.config.architecture.latent_shape

    @property
    def latent_scale_factor(self) -> float:
        """s in z = s * mu(x), kept in the autoencoder's own config (``scaling_factor``)."""
        return float(self.autoencoder.config.scaling_factor)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_latent_scale_factor(self, scale: float) -> None:
        """Set s in both the autoencoder config and ``self.config``."""
        self.autoencoder.register_to_config(scaling_factor=float(scale))
        self.config = dataclasses.replace(self.config, latent_scale_factor=float(scale))

    # --- the LatentPrior protocol ----------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) model units -> (B, C, H/f, W/f) scaled posterior mean; differentiable."""
        lo, hi = self.config.model_clip
        mean = _per_chunk(lambda part: self.autoencoder.encode(part).latent_dist.mean, x.clamp(lo, hi))
        return mean * self.latent_scale_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) scaled latents -> (B, 1, H, W) model units; differentiable."""
        return _per_chunk(lambda part: self.autoencoder.decode(part).sample, z / self.latent_scale_factor)

    def predict_noise(self, z: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """epsilon_theta(z_t, t) for z (B, C, h, w) and t a scalar or (B,) LongTensor."""
        t = torch.as_tensor(t, device=z.device, dtype=torch.long)
        if t.ndim == 0:
            t = t.expand(z.shape[0])
        out = apply_unet(self.unet, z, t, self.config.architecture.unet.patch_size)
        prediction = self.scheduler.config.prediction_type
        if prediction == "epsilon":
            return out
        if prediction == "v_prediction":
            ab = self.scheduler.alphas_cumprod.to(device=z.device, dtype=z.dtype)[t].view(-1, 1, 1, 1)
            return ab.sqrt() * out + (1.0 - ab).sqrt() * z
        raise ValueError(f"unsupported prediction_type {prediction!r}")

    # --- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path, half: bool = False) -> Path:
        """Write the bundle folder (see module docstring); ``half`` stores fp16 weights.

        The bundle is assumed to be fp32 in memory, as ``load`` and ``create_bundle`` make it.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, model in ((AUTOENCODER_DIR, self.autoencoder), (UNET_DIR, self.unet)):
            if half:
                model.half()
            try:
                model.save_pretrained(path / name, safe_serialization=True, max_shard_size=MAX_SHARD_SIZE)
            finally:
                model.float()
        self.scheduler.save_pretrained(path / SCHEDULER_DIR)
        self.config.save(path / PRIOR_CONFIG_NAME)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> LatentDiffusionBundle:
        """Read a bundle folder (strict, offline) as fp32 on ``device``."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: model folder not found")
        config = PriorConfig.load(path / PRIOR_CONFIG_NAME)
        with third_party_quiet():
            autoencoder = load_pretrained_strict(AutoencoderKL, path / AUTOENCODER_DIR)
            unet = load_pretrained_strict(UNet2DModel, path / UNET_DIR)
            scheduler = DDIMScheduler.from_pretrained(path / SCHEDULER_DIR, local_files_only=True)
        stored = float(autoencoder.config.scaling_factor)
        if abs(stored - config.latent_scale_factor) > 1e-6 * max(1.0, abs(stored)):
            raise ValueError(
                f"{path}: latent scale factor differs between autoencoder/config.json ({stored}) "
                f"and prior_config.json ({config.latent_scale_factor})"
            )
        return cls(autoencoder, unet, scheduler, config).to(device)


def weights_digest(module: torch.nn.Module, parts: tuple[str, ...] | None = None, algorithm: str = "sha256") -> str:
    """Hex digest of ``module``'s weights: every state entry's name and fp32 values, in name order.

    Equal digests mean the same weights, whatever folder or file they were loaded from, so a
    reconstruction can record which prior made it and a resumed run can refuse to mix two priors.
    ``parts`` keeps only the entries whose first name component is listed (for example the
    autoencoder's encoder); ``algorithm`` is any ``hashlib`` name.
    """
    digest = hashlib.new(algorithm)
    for name, value in sorted(module.state_dict().items()):
        if parts is None or name.split(".")[0] in parts:
            digest.update(name.encode())
            digest.update(value.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def _per_chunk(fn: Any, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` along the batch, :data:`CPU_AUTOENCODER_CHUNK` items at a time on a CPU (one call elsewhere)."""
    if x.device.type != "cpu" or x.shape[0] <= CPU_AUTOENCODER_CHUNK:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(CPU_AUTOENCODER_CHUNK)])


def create_bundle(architecture: str | ArchitectureConfig = "tiny", seed: int = 0) -> LatentDiffusionBundle:
    """An untrained bundle (random weights from ``seed``, scale factor 1) of a named architecture."""
    arch = get_architecture(architecture)
    return LatentDiffusionBundle(
        build_autoencoder(arch, seed),
        build_unet(arch, seed + 1),
        build_scheduler(arch.schedule),
        PriorConfig(architecture=arch),
    )


def load_default_model(device: str | torch.device = "cpu") -> LatentDiffusionBundle:
    """The prior shipped in ``resample_med/default_model`` (trained on open-licence CT slices)."""
    if not (DEFAULT_MODEL_DIR / PRIOR_CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{DEFAULT_MODEL_DIR}: the default model is not installed (prior_config.json missing); "
            "train one with `resample-med train` or reinstall the package"
        )
    return LatentDiffusionBundle.load(DEFAULT_MODEL_DIR, device=device)
