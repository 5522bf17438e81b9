"""Values tuned once on validation data, stored as data in ``tuned.json`` beside this module.

Each entry of the JSON file is ``{"value": number, "description": text, "provenance": text}``;
the provenance says which command chose the value, when, on which slices and with what score.
The tuning commands (``python benchmarks/tune.py tv|latent_dps``,
``python benchmarks/volume.py --tune resample|tv``) write it through :func:`store`; do not edit it
by hand, rerun the tuning instead. The values are read once at import under the names the
engine uses (:data:`TV_WEIGHT`, :data:`LATENT_DPS_FAST_STEP_SIZE`, :data:`RESAMPLE_Z_WEIGHT`,
:data:`TV_Z_WEIGHT`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

TUNED_FILE = Path(__file__).with_name("tuned.json")
"""The store shipped with the package."""


@dataclass(frozen=True)
class TunedValue:
    """One tuned number and how it was chosen."""

    value: float
    description: str
    provenance: str


def load(path: Path = TUNED_FILE) -> dict[str, TunedValue]:
    """Every entry of the store at ``path`` by name.

    Raises:
        ValueError: the file is not a JSON object of ``{"value", "description", "provenance"}`` entries.
    """
    try:
        raw = json.loads(Path(path).read_text())
        entries = {name: TunedValue(**entry) for name, entry in raw.items()}
    except (OSError, json.JSONDecodeError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a store of tuned values ({err}); restore it from the repository") from err
    for name, entry in entries.items():
        if isinstance(entry.value, bool) or not isinstance(entry.value, (int, float)) or not math.isfinite(entry.value):
            raise ValueError(f"{path}: {name} has value {entry.value!r}, not a finite number; rerun its tuning")
    return entries


def store(name: str, value: float, provenance: str, path: Path = TUNED_FILE) -> None:
    """Replace the value and provenance of the existing entry ``name`` in the store at ``path``.

    The file is rewritten atomically (a temporary file in the same folder, then :func:`os.replace`),
    so an interrupted tuning never leaves half a store. The running process keeps the values it
    imported; the next one reads the new value.

    Raises:
        KeyError: ``name`` is not an entry of the store (a new knob is added to the file by hand,
            with its description, before it is tuned).
        ValueError: ``value`` is not a finite number.
    """
    if not math.isfinite(value):
        raise ValueError(f"tuned value {name} = {value!r} is not a finite number")
    entries = load(path)
    if name not in entries:
        raise KeyError(f"{path} has no entry {name!r} (entries: {', '.join(entries)})")
    entries[name] = TunedValue(float(value), entries[name].description, provenance)
    text = json.dumps({k: asdict(v) for k, v in entries.items()}, indent=1) + "\n"
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)  # mkstemp's 0600 would make the store private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_VALUES = load()

TV_WEIGHT: float = _VALUES["TV_WEIGHT"].value
"""TV weight ``w`` of :class:`resample_med.sampling.baselines.tv.TVConfig` (normalised problem)."""
LATENT_DPS_FAST_STEP_SIZE: float = _VALUES["LATENT_DPS_FAST_STEP_SIZE"].value
"""Guidance step ``zeta`` of the ``fast`` (20-step) Latent-DPS preset; the step depends on the step
count, so the 50- and 500-step presets keep DPS's own 1.0."""
RESAMPLE_Z_WEIGHT: float = _VALUES["RESAMPLE_Z_WEIGHT"].value
"""Volume mode's ``z_weight`` of :class:`resample_med.sampling.ReSampleConfig` (quadratic z-difference
penalty, normalised by ``||A||^2``)."""
TV_Z_WEIGHT: float = _VALUES["TV_Z_WEIGHT"].value
"""Volume mode's ``z_weight`` of :class:`resample_med.sampling.baselines.tv.TVConfig` (z differences in
3-D TV relative to in-plane ones)."""


def provenance(name: str) -> str:
    """How the tuned value ``name`` was chosen (as imported)."""
    return _VALUES[name].provenance
