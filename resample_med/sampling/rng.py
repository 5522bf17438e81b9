"""Randomness through an explicit :class:`torch.Generator` only (results reproducible from a seed).

A batch may also draw from :class:`ItemGenerators`, one generator per slice: then the noise of a
slice does not depend on which other slices share its batch (batch size, resume, the slabs of
volume mode).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_SEED = 0
"""Seed used when a caller passes no generator."""


class ItemGenerators:
    """One :class:`torch.Generator` per slice of a batch, in batch order.

    :func:`standard_normal` draws the rows of slice ``k`` (``B / len(generators)`` adjacent rows:
    its posterior samples) from ``generators[k]``; with one slice it draws exactly what that
    generator alone would.
    """

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        if not generators:
            raise ValueError("ItemGenerators needs at least one generator")
        self.generators = list(generators)

    @property
    def device(self) -> torch.device:
        """Where the generators live."""
        return self.generators[0].device


Generator = torch.Generator | ItemGenerators
"""Either source of randomness the samplers accept."""


def generator_or_default(generator: Generator | None, device: torch.device | str) -> Generator:
    """The caller's generator, or a new one on ``device`` seeded with :data:`DEFAULT_SEED`."""
    if generator is not None:
        return generator
    return torch.Generator(device=device).manual_seed(DEFAULT_SEED)


def single_generator(generator: Generator) -> torch.Generator:
    """A plain :class:`torch.Generator` for draws that are not per slice (the first slice's, for
    :class:`ItemGenerators`)."""
    return generator.generators[0] if isinstance(generator, ItemGenerators) else generator


def standard_normal(like: Tensor, generator: Generator) -> Tensor:
    """``N(0, I)`` noise shaped, typed and placed like ``like``, drawn from ``generator``
    (on the generator's device, then moved to ``like``'s); per slice for :class:`ItemGenerators`."""
    if isinstance(generator, ItemGenerators):
        n = len(generator.generators)
        if like.shape[0] % n:
            raise ValueError(f"{like.shape[0]} batch items cannot be split among {n} slice generators")
        rows = like.shape[0] // n
        noise = torch.cat(
            [
                torch.randn((rows, *like.shape[1:]), generator=g, device=g.device, dtype=like.dtype)
                for g in generator.generators
            ]
        )
    else:
        noise = torch.randn(like.shape, generator=generator, device=generator.device, dtype=like.dtype)
    return noise.to(like.device)
