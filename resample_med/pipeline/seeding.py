"""Reproducible per-slice random streams derived from one user seed.

Each slice gets its own :class:`torch.Generator` seeded from ``(seed, purpose, index)`` through
:class:`numpy.random.SeedSequence` (a batch draws through :func:`slice_generators`, one per slice),
so results do not depend on how a volume was split into batches or slabs, and an interrupted run
that resumes draws the same noise for the remaining slices.
"""

from __future__ import annotations

import numpy as np
import torch

from resample_med.sampling.rng import ItemGenerators

PURPOSES = ("noise", "sampler")


def derived_seed(seed: int, purpose: str, index: int) -> int:
    """A 63-bit seed for ``purpose`` (``"noise"`` or ``"sampler"``) of slice ``index``."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; expected one of {PURPOSES}")
    state = np.random.SeedSequence([seed, PURPOSES.index(purpose), index]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def make_generator(seed: int, purpose: str, index: int, device: torch.device | str | None = None) -> torch.Generator:
    """A :class:`torch.Generator` on ``device`` seeded by :func:`derived_seed`."""
    generator = torch.Generator(device=device if device is not None else "cpu")
    generator.manual_seed(derived_seed(seed, purpose, index))
    return generator


def slice_generators(
    seed: int, purpose: str, indices: list[int], device: torch.device | str | None = None
) -> ItemGenerators:
    """:func:`make_generator` of every slice in ``indices`` (a batch, in batch order)."""
    return ItemGenerators([make_generator(seed, purpose, int(i), device) for i in indices])
