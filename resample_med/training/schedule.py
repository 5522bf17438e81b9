"""Learning rate: linear warm-up, then cosine decay over a step *or* wall-clock horizon.

Training here is budgeted in minutes as often as in steps (a CPU run in the background, a GPU run
of a few minutes), so the decay follows ``progress = max(steps_done / max_steps, elapsed / budget)``
and reaches ``min_lr_ratio * lr`` exactly when the first of the two limits is hit. Each invocation
(also a resumed or continued one) warms up again: a warm restart (Loshchilov & Hutter 2017).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LRSchedule:
    """``lr(progress) = lr * min_lr_ratio + lr (1 - min_lr_ratio) (1 + cos(pi progress)) / 2`` after warm-up."""

    lr: float
    warmup_steps: int
    min_lr_ratio: float = 0.05

    def __call__(self, steps_done: int, progress: float) -> float:
        """Learning rate after ``steps_done`` steps of this invocation at ``progress`` in [0, 1]."""
        if steps_done < self.warmup_steps:
            return self.lr * (steps_done + 1) / self.warmup_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)


class Budget:
    """Step and wall-clock limits of one training invocation."""

    def __init__(self, start_step: int, max_steps: int, max_minutes: float | None) -> None:
        self.start_step = start_step
        self.max_steps = max_steps
        self.max_seconds = None if max_minutes is None else 60.0 * max_minutes
        self.t0 = time.monotonic()

    @property
    def elapsed(self) -> float:
        """Seconds since this invocation started training."""
        return time.monotonic() - self.t0

    def progress(self, step: int) -> float:
        """Fraction of the budget used, by whichever limit is nearer."""
        steps = (step - self.start_step) / max(self.max_steps - self.start_step, 1)
        if self.max_seconds is None:
            return steps
        return max(steps, self.elapsed / self.max_seconds)

    def done(self, step: int) -> bool:
        """True once the step limit or the time limit is reached."""
        return step >= self.max_steps or (self.max_seconds is not None and self.elapsed >= self.max_seconds)
