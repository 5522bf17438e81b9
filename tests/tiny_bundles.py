"""Tiny latent diffusion bundles with every UNet weight random, and their noise predictions."""

from __future__ import annotations

import dataclasses

import torch

from resample_med.models import LatentDiffusionBundle
from resample_med.models.bundle import create_bundle
from resample_med.models.config import get_architecture


def randomised_tiny_bundle(layers_per_block: int) -> LatentDiffusionBundle:
    """A tiny bundle whose every UNet weight is random (fresh diffusers inits leave some at zero)."""
    arch = get_architecture("tiny")
    arch = dataclasses.replace(arch, unet=dataclasses.replace(arch.unet, layers_per_block=layers_per_block))
    bundle = create_bundle(arch, seed=3)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in bundle.unet.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=generator))
    return bundle


def noise_predictions(bundle: LatentDiffusionBundle) -> torch.Tensor:
    """epsilon_theta on 3 fixed random latents (3, C, h, w) at timesteps 3, 400 and 990."""
    generator = torch.Generator().manual_seed(1)
    z = torch.randn((3, *bundle.latent_shape), generator=generator)
    with torch.no_grad():
        return bundle.predict_noise(z, torch.tensor([3, 400, 990]))
