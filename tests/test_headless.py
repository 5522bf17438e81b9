"""A machine without an X server and without Xvfb: GUI tests skip with how to enable them, the rest runs.

Simulated in a subprocess: ``DISPLAY``/``WAYLAND_DISPLAY`` removed, ``PATH`` holding only the Python
interpreter's folder (no ``Xvfb`` on it) and pytest-xvfb disabled (``-p no:xvfb``). Without the
conftest guard, Qt aborts the whole process in pytest-qt's ``qapp`` fixture.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("napari")
pytest.importorskip("pytestqt")


def headless_env() -> dict[str, str]:
    """The current environment as a machine without a display and without Xvfb would have it."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PATH"] = str(Path(sys.executable).parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return env


def test_gui_tests_skip_with_a_hint_and_the_rest_runs_without_a_display():
    env = headless_env()
    assert shutil.which("Xvfb", path=env["PATH"]) is None
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:xvfb",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
            "tests/test_napari_plugin.py",
            "-k",
            "sample_data_loads or reader_opens_nifti",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 passed, 1 skipped" in output, output
    assert "install Xvfb" in output and "xvfb-run" in output, output
