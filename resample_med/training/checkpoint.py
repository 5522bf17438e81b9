"""Resumable training state: one ``checkpoint.pt`` per run folder, written atomically.

Holds the model (and EMA) state dicts, the optimizer, the step, the accumulated wall time and the
data generator's state, so ``--resume`` continues the same run with the same step count. Beside it,
``best.pt`` holds the weights with the best validation score seen so far in the run
(:class:`BestWeights`: what ships when later weights validate worse, e.g. once a small set of
slices starts to be memorised).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"


@dataclass
class TrainState:
    """Everything needed to continue training."""

    step: int
    train_seconds: float
    models: dict[str, dict[str, torch.Tensor]]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


def save_atomically(obj: dict[str, Any], path: Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then an atomic rename: a run stopped
    mid-write leaves the previous file intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def save_checkpoint(run_dir: str | Path, state: TrainState) -> Path:
    """Write ``run_dir/checkpoint.pt`` via a temporary file and an atomic rename."""
    return save_atomically(
        {
            "step": state.step,
            "train_seconds": state.train_seconds,
            "models": state.models,
            "optimizer": state.optimizer,
            "generator": state.generator,
            "extra": state.extra,
        },
        Path(run_dir) / CHECKPOINT_NAME,
    )


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


class SelectionWarning(UserWarning):
    """The validated selection kept weights the user probably did not mean to ship (for example the
    starting weights of a continued run)."""


@dataclass(frozen=True)
class BestScore:
    """The weights held in ``run_dir/best.pt``: their step, selection score (lower is better) and
    validation loss (equal to the score when the run selects on the loss)."""

    step: int
    score: float
    val_loss: float


def save_best(run_dir: str | Path, best: BestScore, weights: dict[str, torch.Tensor]) -> BestScore:
    """Write ``weights`` (a state dict) with their score to ``run_dir/best.pt``, atomically."""
    record = {"step": best.step, "score": best.score, "val_loss": best.val_loss, "weights": weights}
    save_atomically(record, Path(run_dir) / BEST_NAME)
    return best


def load_best(run_dir: str | Path) -> tuple[BestScore, dict[str, torch.Tensor]] | None:
    """``(score, state dict)`` from ``run_dir/best.pt``, or None when the run has none."""
    path = Path(run_dir) / BEST_NAME
    if not path.is_file():
        return None
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return BestScore(int(raw["step"]), float(raw["score"]), float(raw["val_loss"])), raw["weights"]


class BestWeights:
    """The run's best validated weights so far (lowest score), mirrored in ``run_dir/best.pt``.

    Both training stages select what ships through it: ``offer`` after each validation,
    ``restore`` at the end. A resumed run starts from the stored best, so it keeps competing.
    Disabled (``enabled=False``: the run ships its last weights), it keeps nothing and restores
    nothing, whatever ``best.pt`` an earlier run left.
    """

    def __init__(self, run_dir: str | Path, resume: bool, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        stored = load_best(self.run_dir) if resume and enabled else None
        self.best: BestScore | None = stored[0] if stored is not None else None

    def offer(self, step: int, score: float, val_loss: float, model: torch.nn.Module) -> None:
        """Keep ``model``'s weights when ``score`` is the lowest so far."""
        if not self.enabled:
            return
        if self.best is None or score < self.best.score:
            self.best = save_best(self.run_dir, BestScore(step, score, val_loss), model.state_dict())

    def restore(self, model: torch.nn.Module, step: int) -> int:
        """Load the best weights into ``model`` unless they are its current ones (those of ``step``);
        returns the step of the weights ``model`` now holds.

        Warns (:class:`SelectionWarning`) when they are step 0's, the weights training started from:
        then nothing the run trained ships."""
        if self.best is None or self.best.step == step or (stored := load_best(self.run_dir)) is None:
            return step
        model.load_state_dict(stored[1])
        if self.best.step == 0:
            warnings.warn(
                f"{self.run_dir}: the run ships step 0's weights, the ones training started from: no later "
                "validation scored better. To keep the last weights instead, run the same command with "
                f"--resume --max-steps {step} --no-keep-best",
                SelectionWarning,
                stacklevel=3,
            )
        return self.best.step
