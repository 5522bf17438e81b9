"""Helpers the ``resample-med`` subcommands share: device, preset, model, sampler config, versions."""

from __future__ import annotations

import dataclasses
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resample_med.config import AUTO, ConfigError

if TYPE_CHECKING:
    import torch

    from resample_med.models import LatentDiffusionBundle
    from resample_med.sampling.prior import LatentPrior
    from resample_med.sampling.registry import MethodConfig

EXIT_OK = 0
EXIT_PARTIAL = 1
"""Some series of a folder of studies failed, the others were reconstructed."""
EXIT_BAD_INPUT = 2
"""Unusable input or configuration (also argparse's usage-error code)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT); finished slices are kept for resuming."""

CLI_SAMPLER_ALIASES: dict[str, tuple[str, ...]] = {"steps": ("num_steps", "max_iter"), "sigma2": ("gamma",)}
"""Command-line names of sampler config fields, first match wins: ``--steps`` (diffusion steps or
solver iterations) and the deprecated ``--sigma2`` (now ``--gamma``, ReSample's resampling variance
scale, the field's own name)."""

DEPRECATED_SAMPLER_NAMES: dict[str, str] = {"sigma2": "gamma"}
"""Old sampler setting names still accepted, with a warning, -> the name to use."""

REPORTED_PACKAGES = ("torch", "diffusers", "numpy", "pydicom", "SimpleITK", "monai")


_SPHINX_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`~?\.?([^`<]*?)\s*(?:<[^>]*>)?`")
"""``:mod:`x```, ``:func:`~.y```, ``:py:class:`z``` and ``:ref:`text <target>``` roles."""
_LITERAL = re.compile(r"``([^`]+)``")


def plain_help(text: str | None) -> str:
    """A docstring as ``--help`` shows it: Sphinx roles and double-backtick literals as plain text."""
    text = _SPHINX_ROLE.sub(r"\1", text or "")
    text = _LITERAL.sub(r"\1", text)
    return re.sub(r"(\S)::$", r"\1:", text, flags=re.M)


def resolve_preset(preset: str, device: torch.device) -> str:
    """``"auto"`` -> the device's default preset (:func:`resample_med.sampling.registry.default_preset`:
    ``fast`` on CPU, ``default`` on CUDA); a named preset unchanged."""
    from resample_med.sampling.registry import default_preset

    return default_preset(device) if preset == AUTO else preset


def sampler_config(method: str, preset: str, overrides: dict[str, Any]) -> MethodConfig:
    """The method's config dataclass from its ``preset`` with ``overrides`` applied
    (:func:`resample_med.sampling.registry.configure`).

    ``overrides`` may use the command-line aliases (``steps``, ``sigma2``) and nested mappings for
    nested dataclasses (``{"latent": {"max_iter": 20}}``).

    Raises:
        ConfigError: an unknown preset, a setting the method does not have, or an invalid value.
    """
    from resample_med.sampling.registry import configure, resolve_method_config

    try:
        fields = {f.name for f in dataclasses.fields(resolve_method_config(method, preset))}
    except ValueError as err:
        raise ConfigError(str(err)) from err
    for old, new in DEPRECATED_SAMPLER_NAMES.items():
        if old in overrides:
            if new in overrides:
                raise ConfigError(
                    f"--{old} / sampler.{old} and --{new} / sampler.{new} set the same thing: "
                    f"keep only --{new} (sampler.{new})"
                )
            print(
                f"resample-med: warning: --{old} / sampler.{old} is deprecated; use --{new} / sampler.{new} "
                "(the same setting)",
                file=sys.stderr,
            )
    named = {}
    for key, value in overrides.items():
        candidates = [name for name in CLI_SAMPLER_ALIASES.get(key, (key,)) if name in fields]
        if not candidates:
            raise ConfigError(f"--{key.replace('_', '-')} / sampler.{key} does not apply to method {method!r}")
        named[candidates[0]] = value
    try:
        return configure(method, preset, named)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def parse_slice_range(text: str) -> slice:
    """``--slices START:STOP`` (either end may be empty; Python slice rules) -> :class:`slice`."""
    try:
        start, stop = (int(v) if v.strip() else None for v in text.split(":"))
    except ValueError as err:
        raise ConfigError(f"--slices {text!r}: expected START:STOP, e.g. 10:20") from err
    return slice(start, stop)


def crop_to_slices(volume: Any, text: str, where: Path) -> Any:
    """``volume`` cut to the ``--slices`` range ``text``."""
    from resample_med.pipeline import select_slices

    try:
        return select_slices(volume, parse_slice_range(text))
    except ValueError as err:
        raise ConfigError(f"{where}: --slices {text}: {err}") from err


def config_dict(config: Any) -> dict[str, Any]:
    """A sampler config dataclass as a plain dict."""
    return dataclasses.asdict(config)


def load_prior(model: str | None, device: torch.device) -> LatentDiffusionBundle:
    """The model bundle in folder ``model``, or the shipped default model when ``None``."""
    from resample_med.models import LatentDiffusionBundle, load_default_model

    if model is None:
        return load_default_model(device=device)
    path = Path(model)
    if not path.is_dir():
        raise ConfigError(f"{path}: model folder not found")
    return LatentDiffusionBundle.load(path, device=device)


def prior_weights_digest(prior: LatentPrior | None) -> str | None:
    """SHA-256 of the prior's weights (``resample_med.models.weights_digest``): which prior made a
    reconstruction, whatever folder it was loaded from. ``None`` without a prior or for a prior
    that is not a torch module."""
    import torch

    from resample_med.models import weights_digest

    return weights_digest(prior) if isinstance(prior, torch.nn.Module) else None


def model_summary(prior: LatentPrior | None, model: str | None, weights_sha256: str | None) -> dict[str, Any] | None:
    """What the report records about the prior: where it came from, its weights' digest
    (:func:`prior_weights_digest`, computed once by the caller) and its configuration."""
    if prior is None:
        return None
    summary: dict[str, Any] = {
        "path": model or "shipped default model (resample_med/default_model)",
        "weights_sha256": weights_sha256,
    }
    config = getattr(prior, "config", None)
    if config is not None and dataclasses.is_dataclass(config) and not isinstance(config, type):
        summary["config"] = dataclasses.asdict(config)
    summary["latent_shape"] = list(getattr(prior, "latent_shape", ()))
    summary["image_size"] = getattr(prior, "image_size", None)
    return summary


def versions() -> dict[str, str]:
    """Versions of Python, resample-med and the packages that shape the numbers."""
    import resample_med

    found = {"python": platform.python_version(), "resample_med": resample_med.__version__}
    for name in REPORTED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def volume_mode(settings: Any) -> Any:
    """The :class:`~resample_med.pipeline.VolumeMode` of ``reconstruction`` settings, or ``None`` (slice mode).

    Raises:
        ConfigError: a z weight without volume mode, or an invalid one.
    """
    if not settings.volume_mode:
        if settings.z_weight is not None:
            raise ConfigError(
                "--z-weight / reconstruction.z_weight applies to volume mode: add --volume-mode "
                "(or set reconstruction.volume_mode: true)"
            )
        return None
    from resample_med.pipeline.slabs import Z_WEIGHT_DEFAULTS, VolumeMode

    if settings.method not in Z_WEIGHT_DEFAULTS:
        raise ConfigError(
            f"--volume-mode works with --method {' | '.join(Z_WEIGHT_DEFAULTS)}, not {settings.method!r}; "
            "drop --volume-mode or choose one of those"
        )
    try:
        return VolumeMode(z_weight=settings.z_weight)
    except ValueError as err:
        raise ConfigError(f"--z-weight: {err}") from err
