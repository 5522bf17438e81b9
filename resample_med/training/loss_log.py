"""Append-only JSON-lines log of training losses and validation metrics (one record per line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LOG_NAME = "loss_log.jsonl"


class LossLog:
    """``run_dir/loss_log.jsonl``; each record has at least ``step`` and ``kind``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOG_NAME

    def write(self, step: int, kind: str, **values: Any) -> None:
        """Append one record, e.g. ``write(100, "train", loss=0.01, lr=1e-3)``."""
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")

    def read(self, kind: str | None = None) -> list[dict[str, Any]]:
        """All records (of one kind)."""
        if not self.path.is_file():
            return []
        records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [r for r in records if kind is None or r["kind"] == kind]
