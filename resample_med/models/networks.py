"""Build the three diffusers parts of the prior from an :class:`ArchitectureConfig`.

Seeded construction: weights are initialised under ``torch.random.fork_rng`` with the given seed,
so creating a model never disturbs the caller's global random state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel

from resample_med.models.config import ArchitectureConfig, NoiseSchedule


def build_autoencoder(arch: ArchitectureConfig, seed: int = 0) -> AutoencoderKL:
    """A freshly initialised 1-channel ``AutoencoderKL`` (image (B,1,H,W) <-> latent (B,C,H/f,W/f))."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(**arch.autoencoder.diffusers_kwargs(arch.image_size))


def build_unet(arch: ArchitectureConfig, seed: int = 0) -> UNet2DModel:
    """A freshly initialised ``UNet2DModel`` on latents of shape ``arch.latent_shape``."""
    channels, size, _ = arch.latent_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(**arch.unet.diffusers_kwargs(channels, size))


def build_scheduler(schedule: NoiseSchedule) -> DDIMScheduler:
    """The DDIM scheduler over ``schedule.num_train_timesteps`` training steps."""
    return DDIMScheduler(**schedule.diffusers_kwargs())


def apply_unet(unet: UNet2DModel, z: torch.Tensor, t: torch.Tensor, patch_size: int) -> torch.Tensor:
    """UNet output for latents z (B, C, h, w) at timesteps t (B,), folding p x p patches into channels.

    (B, C, h, w) -> pixel_unshuffle -> (B, C p^2, h/p, w/p) -> UNet -> pixel_shuffle -> (B, C, h, w).
    """
    if patch_size == 1:
        return unet(z, t).sample
    out = unet(F.pixel_unshuffle(z, patch_size), t).sample
    return F.pixel_shuffle(out, patch_size)


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())
