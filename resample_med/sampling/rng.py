"""Randomness through an explicit :class:`torch.Generator` only (results reproducible from a seed)."""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_SEED = 0
"""Seed used when a caller passes no generator."""


def make_generator(generator: torch.Generator | None, device: torch.device | str) -> torch.Generator:
    """The caller's generator, or a new one on ``device`` seeded with :data:`DEFAULT_SEED`."""
    if generator is not None:
        return generator
    return torch.Generator(device=device).manual_seed(DEFAULT_SEED)


def standard_normal(like: Tensor, generator: torch.Generator) -> Tensor:
    """``N(0, I)`` noise shaped, typed and placed like ``like``, drawn from ``generator``
    (on the generator's device, then moved to ``like``'s)."""
    noise = torch.randn(like.shape, generator=generator, device=generator.device, dtype=like.dtype)
    return noise.to(like.device)
