"""Shared pytest fixtures: where ../shared is, and skipping cleanly without it or without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder with real CT data; skips the test when it is absent."""
    if not (SHARED_DIR / "data").is_dir():
        pytest.skip(f"real CT data not available: {SHARED_DIR} is absent (a fresh machine has no ../shared)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def cuda_device() -> torch.device:
    """A CUDA device; skips the test on a machine without one."""
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available on this machine")
    return torch.device("cuda")
