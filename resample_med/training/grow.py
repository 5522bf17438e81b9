"""Deepen a trained latent UNet without changing what it computes (Net2DeeperNet, Chen et al. 2016).

A UNet trained on 2 CPU cores cannot be re-trained wider from scratch in a session, but it can be
given more layers that start as the identity and are then trained on: the grown network's output
equals the old one's at step 0, so training continues from the old prior instead of from noise.

``deepen_bundle`` turns the bundle's diffusers ``UNet2DModel`` with ``layers_per_block = L`` into
one with ``L + 1`` (built by ``build_unet``, so the caller's random state is untouched). Per
resolution level, with h_k the outputs of the old down resnets and d the
downsampler output:

- down block: resnets ``R_0..R_{L-1}`` are copied and a new ``R_L`` is appended whose last
  convolution is zero, so ``R_L(h) = h`` (ResnetBlock2D: ``out = x + conv2(...)``). Its skip output
  is therefore a duplicate of ``h_{L-1}``.
- up block: the old resnets ``U_0..U_L`` consume the skips ``h_{L-1}, .., h_0, d`` in that order;
  the new block consumes ``h_{L-1}, h_{L-1}, h_{L-2}, .., h_0, d``. ``U_0`` stays first (it eats the
  duplicate), a new ``U'_1`` is inserted that returns its hidden input and ignores its skip (1x1
  shortcut ``[I | 0]``, zero ``conv2``), and ``U_1..U_L`` follow unchanged.
- attention levels get a new self-attention after each new resnet with a zero output projection
  (a residual block, so also the identity).

The mid block, time embedding, conv_in/conv_out, downsamplers and upsamplers are copied as they are.
The resnet count per level grows from 2L + 1 to 2L + 3: for the shipped UNet (L = 1) an evaluation
costs 1.47x and a training step 1.53x (``benchmarks/results/prior_recipe_speed_deepened.md``).
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D

from resample_med.models.bundle import LatentDiffusionBundle
from resample_med.models.config import PriorConfig
from resample_med.models.networks import build_unet


def _zero_(module: torch.nn.Module) -> None:
    for p in module.parameters():
        torch.nn.init.zeros_(p)


def _make_identity_resnet(resnet: ResnetBlock2D) -> None:
    """Make a freshly built ResnetBlock2D return its first ``out_channels`` input channels."""
    _zero_(resnet.conv2)
    shortcut = resnet.conv_shortcut
    if shortcut is None:
        return
    with torch.no_grad():
        weight = torch.zeros_like(shortcut.weight)  # (C_out, C_in, 1, 1)
        c_out = weight.shape[0]
        weight[:, :c_out, 0, 0] = torch.eye(c_out)
        shortcut.weight.copy_(weight)
        torch.nn.init.zeros_(shortcut.bias)


def _make_identity_attention(attention: Attention) -> None:
    """A residual self-attention block whose output projection is zero returns its input."""
    _zero_(attention.to_out[0])


def _copy(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    dst.load_state_dict(src.state_dict(), strict=True)


def _copy_into_deeper(unet: UNet2DModel, grown: UNet2DModel) -> None:
    """Fill ``grown`` (``unet``'s architecture with one more layer per block) so that it computes
    what ``unet`` does for any input (B, C, h, w) and timestep (B,): the old weights, and the new
    layers made the identity."""
    old_layers = int(unet.config.layers_per_block)
    for name in ("conv_in", "time_proj", "time_embedding", "mid_block", "conv_norm_out", "conv_out"):
        old, new = getattr(unet, name), getattr(grown, name)
        if old is not None:
            _copy(new, old)

    for old_block, new_block in zip(unet.down_blocks, grown.down_blocks):
        for k in range(old_layers):
            _copy(new_block.resnets[k], old_block.resnets[k])
        _make_identity_resnet(new_block.resnets[old_layers])
        if hasattr(old_block, "attentions"):
            for k in range(old_layers):
                _copy(new_block.attentions[k], old_block.attentions[k])
            _make_identity_attention(new_block.attentions[old_layers])
        if old_block.downsamplers is not None:
            _copy(new_block.downsamplers, old_block.downsamplers)

    for old_block, new_block in zip(unet.up_blocks, grown.up_blocks):
        # new order: U_0, identity, U_1 .. U_L
        _copy(new_block.resnets[0], old_block.resnets[0])
        _make_identity_resnet(new_block.resnets[1])
        for k in range(1, old_layers + 1):
            _copy(new_block.resnets[k + 1], old_block.resnets[k])
        if hasattr(old_block, "attentions"):
            _copy(new_block.attentions[0], old_block.attentions[0])
            _make_identity_attention(new_block.attentions[1])
            for k in range(1, old_layers + 1):
                _copy(new_block.attentions[k + 1], old_block.attentions[k])
        if old_block.upsamplers is not None:
            _copy(new_block.upsamplers, old_block.upsamplers)


def deepen_bundle(bundle: LatentDiffusionBundle) -> LatentDiffusionBundle:
    """The bundle with one more UNet layer per block (module docstring), computing what it did, and
    ``prior_config`` updated to match (``layers_per_block`` + 1)."""
    arch = bundle.config.architecture
    unet_arch = dataclasses.replace(arch.unet, layers_per_block=arch.unet.layers_per_block + 1)
    config: PriorConfig = dataclasses.replace(bundle.config, architecture=dataclasses.replace(arch, unet=unet_arch))
    grown = build_unet(config.architecture).to(bundle.device)
    _copy_into_deeper(bundle.unet, grown)
    return LatentDiffusionBundle(bundle.autoencoder, grown, bundle.scheduler, config)
