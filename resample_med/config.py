"""Run configuration of ``resample-med reconstruct`` / ``simulate``: presets < file < command line.

A :class:`RunConfig` gathers the acquisition, the reconstruction settings and the extra outputs.
It is resolved in this order, later winning:

1. built-in defaults (the :data:`~resample_med.pipeline.DEFAULT_ACQUISITION` preset);
2. a named acquisition preset (``acquisition_preset:`` in the file or ``--acquisition``);
3. a YAML or JSON config file (``--config``);
4. command-line options.

The resolved configuration is written beside the outputs (``config.yaml``) and can be passed back
with ``--config`` to repeat a run. File layout (every key optional)::

    acquisition_preset: sparse-30
    acquisition: {geometry: parallel, n_views: 30, photons: 1.0e5, gaussian_sigma: null}
    reconstruction: {method: resample, preset: fast, n_samples: 4, batch_size: 4, seed: 0,
                     device: auto, model: null}
    sampler: {num_steps: 20, gamma: 40.0}     # fields of the method's config dataclass
    output: {nifti: false, png: false}
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from resample_med.pipeline import ACQUISITION_PRESETS, DEFAULT_ACQUISITION, AcquisitionConfig

if TYPE_CHECKING:
    import torch

AUTO = "auto"
"""Device or sampler preset chosen at run time (CUDA if available; the device's default preset,
:func:`resample_med.sampling.registry.default_preset`)."""


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the file or key."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    import torch

    if str(device) == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device {device!r}: {err}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine")
    return resolved


@dataclass(frozen=True)
class ReconstructionSettings:
    """How to reconstruct.

    Attributes:
        method: a name in :data:`resample_med.sampling.METHODS`.
        preset: the method's named preset, or ``"auto"`` (``fast`` on CPU, ``default`` on CUDA).
        n_samples: posterior samples per slice (``> 1`` also writes a std map); ``None``: the
            sampler config's ``posterior_samples`` (resolved before a run; ``config.yaml`` beside the outputs holds the count used).
        batch_size: slices per sampler call.
        seed: seed of measurement noise and sampling.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... or ``"auto"``.
        model: folder of a saved model bundle; ``None`` for the shipped default model.
        volume_mode: reconstruct adjacent slices jointly, consistent along z
            (:mod:`resample_med.pipeline.slabs`; ReSample and TV).
        z_weight: volume mode's z weight; ``None`` for the method's tuned default.
    """

    method: str = "resample"
    preset: str = AUTO
    n_samples: int | None = None
    batch_size: int = 4
    seed: int = 0
    device: str = AUTO
    model: str | None = None
    volume_mode: bool = False
    z_weight: float | None = None


@dataclass(frozen=True)
class OutputSettings:
    """Extra outputs besides the derived DICOM series and ``report.json``."""

    nifti: bool = False
    png: bool = False


@dataclass(frozen=True)
class RunConfig:
    """Everything a ``reconstruct`` run depends on.

    Attributes:
        acquisition: the simulated acquisition (ignored for sinogram-file inputs, which carry theirs).
        reconstruction: method, preset, sampling and device settings.
        sampler: overrides of fields of the method's config dataclass (e.g. ``num_steps``).
        output: extra outputs.
    """

    acquisition: AcquisitionConfig = field(default_factory=lambda: ACQUISITION_PRESETS[DEFAULT_ACQUISITION])
    reconstruction: ReconstructionSettings = field(default_factory=ReconstructionSettings)
    sampler: dict[str, Any] = field(default_factory=dict)
    output: OutputSettings = field(default_factory=OutputSettings)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable)."""
        return {
            "acquisition": self.acquisition.to_dict(),
            "reconstruction": dataclasses.asdict(self.reconstruction),
            "sampler": dict(self.sampler),
            "output": dataclasses.asdict(self.output),
        }

    def save(self, path: str | Path) -> Path:
        """Write the configuration as YAML (readable back by :func:`load_config_file`)."""
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON (``.json``) config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot parse config file: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level of a config file must be a mapping, got {type(data).__name__}")
    return data


def resolve_config(
    file_data: dict[str, Any] | None = None, overrides: dict[str, dict[str, Any]] | None = None, source: str = "config"
) -> RunConfig:
    """Merge defaults, presets, a config file's dict and command-line ``overrides``.

    Args:
        file_data: the parsed config file (see module docstring), or ``None``.
        overrides: per section (``acquisition_preset`` / ``acquisition`` / ``reconstruction`` /
            ``sampler`` / ``output``) the values given on the command line (only those given).
        source: name of the file, for error messages.
    """
    file_data = dict(file_data or {})
    overrides = overrides or {}
    known = {"acquisition_preset", "acquisition", "reconstruction", "sampler", "output"}
    unknown = sorted(set(file_data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; known: {sorted(known)}")

    preset_name = overrides.get("acquisition_preset", {}).get("name") or file_data.get("acquisition_preset")
    preset_name = preset_name or DEFAULT_ACQUISITION
    if preset_name not in ACQUISITION_PRESETS:
        raise ConfigError(f"{source}: unknown acquisition preset {preset_name!r}; known: {sorted(ACQUISITION_PRESETS)}")
    acquisition = _merge_dataclass(
        ACQUISITION_PRESETS[preset_name],
        file_data.get("acquisition"),
        overrides.get("acquisition"),
        source,
        "acquisition",
    )
    reconstruction = _merge_dataclass(
        ReconstructionSettings(),
        file_data.get("reconstruction"),
        overrides.get("reconstruction"),
        source,
        "reconstruction",
    )
    output = _merge_dataclass(OutputSettings(), file_data.get("output"), overrides.get("output"), source, "output")
    sampler = {**_mapping(file_data.get("sampler"), source, "sampler"), **overrides.get("sampler", {})}
    return RunConfig(acquisition=acquisition, reconstruction=reconstruction, sampler=sampler, output=output)


def _mapping(value: Any, source: str, section: str) -> dict[str, Any]:
    """``value`` as a dict (``None`` -> empty); anything else is a :class:`ConfigError`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: section '{section}' must be a mapping, got {type(value).__name__}")
    return value


def _merge_dataclass(base: Any, file_values: Any, cli_values: dict[str, Any] | None, source: str, section: str) -> Any:
    """``base`` with the file's then the command line's values of ``section`` applied."""
    merged = {**_mapping(file_values, source, section), **(cli_values or {})}
    types = {f.name: str(f.type) for f in dataclasses.fields(base)}
    unknown = sorted(set(merged) - set(types))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} in '{section}'; known: {sorted(types)}")
    merged = {key: _coerce_number(value, types[key]) for key, value in merged.items()}
    try:
        return dataclasses.replace(base, **merged)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: invalid '{section}': {err}") from err


def _coerce_number(value: Any, annotation: str) -> Any:
    """YAML reads ``1e5`` as a string: turn numeric strings into ``float``/``int`` for numeric fields."""
    if not isinstance(value, str):
        return value
    try:
        if "float" in annotation:
            return float(value)
        if "int" in annotation:
            return int(value)
    except ValueError:
        return value
    return value
