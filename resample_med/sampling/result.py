"""What every reconstruction method returns and reports while it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


class ReconstructionCancelled(Exception):
    """Raised by a progress callback to stop a reconstruction; samplers let it propagate."""


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    Attributes:
        stage: what is running, e.g. ``"sampling"``, ``"final_consistency"``, ``"iterations"``.
        step: steps done so far in this stage (1-based once a step has finished).
        total: steps in this stage.
        preview: the current image estimate ``(B, 1, H, W)`` in model units, or ``None``.
    """

    stage: str
    step: int
    total: int
    preview: Tensor | None = None


ProgressCallback = Callable[[ProgressEvent], None]
"""A callback receives :class:`ProgressEvent` s and cancels by raising
:class:`ReconstructionCancelled`."""


@dataclass
class Reconstruction:
    """The result of :func:`resample_med.sampling.reconstruct`.

    Attributes:
        image: ``(B, 1, H, W)`` reconstruction in model units (the posterior-sample mean for
            samplers run with ``n_samples > 1``).
        std: ``(B, 1, H, W)`` per-pixel standard deviation over posterior samples (model units),
            or ``None`` for deterministic methods and ``n_samples == 1``.
        info: method-specific diagnostics (JSON-friendly): sinogram residuals, iterations,
            the config used, ...
    """

    image: Tensor
    std: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


def notify(callback: ProgressCallback | None, event: ProgressEvent) -> None:
    """Send ``event`` to ``callback`` if there is one (exceptions, cancellation included, propagate)."""
    if callback is not None:
        callback(event)
