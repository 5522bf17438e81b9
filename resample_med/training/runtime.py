"""Device choice, mixed precision and small file helpers shared by the training stages."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast(device: torch.device, cpu_bf16: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; on the CPU bf16 autocast when ``cpu_bf16``, else a no-op (fp32).

    CPUs with AVX512-BF16 run a training step of the shipped UNet about 1.8x faster under bf16
    autocast (benchmarks/results/prior_recipe.md); CPUs without it gain nothing or lose.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def write_json(path: str | Path, obj: Any) -> None:
    """Indented JSON; tuples and paths become lists and strings."""
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")
