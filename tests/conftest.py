"""Shared pytest fixtures: where ../shared is, and skipping cleanly without it or without CUDA."""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    """Run a module's tiny sparse products on one torch thread.

    On a busy 2-core machine such products are dominated by OpenMP wake-ups; one thread is faster.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def private_operator_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty on-disk and in-memory projector cache for one test."""
    from resample_med.operators import cache, clear_memory_cache

    folder = tmp_path / "operators"
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(folder))
    clear_memory_cache()
    yield folder
    clear_memory_cache()
