"""Mixed precision and small file helpers shared by the training stages (devices: :func:`resample_med.config.resolve_device`)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch


def autocast(device: torch.device, cpu_bf16: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; on the CPU bf16 autocast when ``cpu_bf16``, else a no-op (fp32).

    CPUs with AVX512-BF16 run a training step of the shipped UNet about 1.8x faster under bf16
    autocast (benchmarks/results/prior_recipe.md); CPUs without it emulate bf16 and lose (an AVX512
    Xeon without BF16: 2.2x slower, benchmarks/results/prior_recipe_speed_no_bf16_cpu.md), hence
    :func:`resolve_cpu_bf16`.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_cpu_bf16(requested: bool | None) -> bool:
    """bf16 autocast on the CPU: as requested, or with ``None`` where the CPU has native bf16."""
    return cpu_has_native_bf16() if requested is None else requested


def write_json(path: str | Path, obj: Any) -> None:
    """Indented JSON; tuples and paths become lists and strings."""
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")
