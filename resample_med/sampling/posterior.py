"""Several posterior samples per slice run as one batch; their mean and per-pixel spread."""

from __future__ import annotations

from torch import Tensor


def repeat_for_samples(x: Tensor, n_samples: int) -> Tensor:
    """``(B, ...) -> (B * n_samples, ...)``: each item repeated ``n_samples`` times, adjacently."""
    return x.repeat_interleave(n_samples, dim=0) if n_samples > 1 else x


def summarise_samples(samples: Tensor, n_samples: int) -> tuple[Tensor, Tensor | None]:
    """Per-slice mean and standard deviation of ``n_samples`` adjacent samples.

    Args:
        samples: ``(B * n_samples, 1, H, W)`` as produced from :func:`repeat_for_samples` inputs.
        n_samples: samples per slice.

    Returns:
        ``mean (B, 1, H, W)`` and the unbiased per-pixel ``std (B, 1, H, W)`` (``None`` when
        ``n_samples == 1``).
    """
    if n_samples == 1:
        return samples, None
    grouped = samples.reshape(-1, n_samples, *samples.shape[1:])
    return grouped.mean(dim=1), grouped.std(dim=1, correction=1)


def first_of_each(x: Tensor, n_samples: int) -> Tensor:
    """``(B * n_samples, ...) -> (B, ...)``: the first sample of every slice (for previews)."""
    return x[::n_samples]


def validate_n_samples(n_samples: int) -> None:
    """Reject ``n_samples < 1`` with a message naming this module."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
