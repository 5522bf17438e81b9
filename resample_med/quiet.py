"""Silencing third-party chatter that says nothing to our users, without touching our own messages.

On every DICOM read MONAI logs "nvImageCodec is not available; skipping pydicom decoder plugin
registration." and warns "NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register
successfully" (its GPU decoder is optional; pydicom decodes); loading a sharded model makes
diffusers draw a "Loading checkpoint shards" progress bar. :func:`third_party_quiet` suppresses
exactly these while a block runs: named loggers raised to ERROR, the named warnings ignored, and
diffusers' progress bars off, all restored afterwards. Our warnings (``DicomInputWarning``) and
errors pass through.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

QUIET_LOGGERS = ("monai.data.nvimgcodec_pydicom_plugin", "diffusers")
"""Loggers whose INFO/WARNING chatter is dropped (their errors still show)."""

QUIET_WARNINGS = (r"NvImgCodecPydicomReader", r"nvImageCodec")
"""Message patterns (regular expressions, matched at the start) of third-party warnings dropped."""


@contextmanager
def third_party_quiet() -> Iterator[None]:
    """Run a block with MONAI's nvImageCodec notices and diffusers' loading output suppressed."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    bars_disabled = _diffusers_bars(disable=True)
    with warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
            if bars_disabled is False:
                _diffusers_bars(disable=False)


def _diffusers_bars(disable: bool) -> bool | None:
    """Switch diffusers' progress bars; returns whether they were disabled before (None: diffusers not loaded)."""
    import sys

    if "diffusers" not in sys.modules:
        return None
    from diffusers.utils import logging as diffusers_logging

    before = not diffusers_logging.is_progress_bar_enabled()
    if disable:
        diffusers_logging.disable_progress_bar()
    else:
        diffusers_logging.enable_progress_bar()
    return before
