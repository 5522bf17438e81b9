"""Shared pytest fixtures: where ../shared is, and skipping cleanly without it, without CUDA or
without a display."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"

DISPLAY_FIXTURES = frozenset({"qapp", "qtbot", "make_napari_viewer", "make_napari_viewer_proxy"})
"""Fixtures that create a QApplication: without a display Qt aborts the whole pytest process."""

NO_DISPLAY_REASON = (
    "no display: these tests need an X server; install Xvfb (Debian/Ubuntu: apt-get install xvfb) "
    "and pytest-xvfb starts it, or run pytest under xvfb-run -a"
)
HEADLESS_QT_PLATFORMS = ("offscreen", "minimal")


def display_available() -> bool:
    """Whether Qt can open a display here (pytest-xvfb has set ``DISPLAY`` by now when it started Xvfb)."""
    if not sys.platform.startswith("linux"):
        return True
    if os.environ.get("QT_QPA_PLATFORM", "") in HEADLESS_QT_PLATFORMS:
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip (with how to enable them) the tests that would create a QApplication without a display."""
    if display_available():
        return
    skip = pytest.mark.skip(reason=NO_DISPLAY_REASON)
    for item in items:
        if DISPLAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(skip)


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


@pytest.fixture
def benchmark_script(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], ModuleType]]:
    """``benchmark_script("volume")`` imports ``benchmarks/volume.py`` as a module (the scripts are
    not a package); every module imported this way is forgotten after the test."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    imported: list[str] = []

    def load(name: str) -> ModuleType:
        imported.append(name)
        return importlib.import_module(name)

    yield load
    for name in imported:
        sys.modules.pop(name, None)
