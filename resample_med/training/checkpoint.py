"""Resumable training state: one ``checkpoint.pt`` per run folder, written atomically.

Holds the model (and EMA) state dicts, the optimizer, the step, the accumulated wall time and the
data generator's state, so ``--resume`` continues the same run with the same step count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainState:
    """Everything needed to continue training."""

    step: int
    train_seconds: float
    models: dict[str, dict[str, torch.Tensor]]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(run_dir: str | Path, state: TrainState) -> Path:
    """Write ``run_dir/checkpoint.pt`` via a temporary file and an atomic rename."""
    path = Path(run_dir) / CHECKPOINT_NAME
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "step": state.step,
            "train_seconds": state.train_seconds,
            "models": state.models,
            "optimizer": state.optimizer,
            "generator": state.generator,
            "extra": state.extra,
        },
        tmp,
    )
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: str | Path) -> TrainState:
    """Read ``run_dir/checkpoint.pt``."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    raw = torch.load(path, map_location="cpu", weights_only=False)
    try:
        return TrainState(
            step=int(raw["step"]),
            train_seconds=float(raw["train_seconds"]),
            models=raw["models"],
            optimizer=raw["optimizer"],
            generator=raw["generator"],
            extra=raw.get("extra", {}),
        )
    except KeyError as exc:
        raise ValueError(f"{path}: checkpoint lacks {exc}") from exc


def resume_from_checkpoint(
    run_dir: str | Path,
    models: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> tuple[int, float]:
    """Load ``run_dir``'s checkpoint into ``models`` (by name), the optimizer and the generator.

    Returns ``(step, train_seconds)`` to continue the count from.
    """
    state = load_checkpoint(run_dir)
    for name, model in models.items():
        model.load_state_dict(state.models[name])
    optimizer.load_state_dict(state.optimizer)
    generator.set_state(state.generator)
    return state.step, state.train_seconds
