"""Filtered back-projection: the operator's own analytic inverse."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from resample_med.sampling.prior import LinearOperator
from resample_med.sampling.result import ProgressCallback, ProgressEvent, Reconstruction, notify


@dataclass(frozen=True)
class FBPConfig:
    """Attributes:
    filter_name: ramp filter variant (``ramp | shepp-logan | cosine | hann``)."""

    filter_name: str = "ramp"


PRESETS: dict[str, FBPConfig] = {"paper": FBPConfig(), "default": FBPConfig(), "fast": FBPConfig()}


def fbp(
    y: Tensor, operator: LinearOperator, config: FBPConfig, *, callback: ProgressCallback | None = None
) -> Reconstruction:
    """``x = FBP(y)``: ``(B, 1, V, D) -> (B, 1, H, W)``; needs ``operator.fbp``."""
    fbp_fn = getattr(operator, "fbp", None)
    if fbp_fn is None:
        raise ValueError(f"operator {type(operator).__name__} has no fbp(y) method")
    x = fbp_fn(y, filter_name=config.filter_name)
    notify(callback, ProgressEvent("iterations", 1, 1, x))
    return Reconstruction(image=x, info={"method": "fbp", "config": {"filter_name": config.filter_name}})
