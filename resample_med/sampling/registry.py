"""One entry point for every method: ``reconstruct(method, y, operator, ...)``, and the facts the
command line, the napari widget and the benchmarks ask about methods: which need the diffusion
prior (:func:`needs_prior`), how settings override a preset (:func:`configure`) and which preset a
device runs by default (:func:`default_preset`)."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any, TypeVar

import torch
from torch import Tensor

from resample_med.sampling.baselines import cgls, fbp, latent_dps, tv
from resample_med.sampling.config import ReSampleConfig, posterior_samples, resolve_resample_config
from resample_med.sampling.names import METHODS, RESAMPLE_VARIANTS
from resample_med.sampling.prior import LatentPrior, LinearOperator
from resample_med.sampling.resample import resample
from resample_med.sampling.result import ProgressCallback, Reconstruction

PRIOR_FREE_METHODS: tuple[str, ...] = ("fbp", "cgls", "tv")
"""Methods of :data:`METHODS` that need no diffusion prior (the classical baselines)."""

MethodConfig = ReSampleConfig | fbp.FBPConfig | cgls.CGLSConfig | tv.TVConfig | latent_dps.LatentDPSConfig
"""The frozen config of any method of :data:`METHODS`."""

C = TypeVar("C", ReSampleConfig, fbp.FBPConfig, cgls.CGLSConfig, tv.TVConfig, latent_dps.LatentDPSConfig)

ConfigChoice = MethodConfig | str | None
"""How callers name a config: an instance, a preset name (``paper | default | fast``) or ``None``
(``"default"``)."""

DEVICE_PRESETS: dict[str, str] = {"cpu": "fast", "cuda": "default"}
"""Preset run when none is named, by device type: ``fast`` is sized for a CPU."""

_BASELINE_PRESETS: dict[str, dict[str, Any]] = {
    "fbp": fbp.PRESETS,
    "cgls": cgls.PRESETS,
    "tv": tv.PRESETS,
    "latent_dps": latent_dps.PRESETS,
}


def resolve_method_config(method: str, config: ConfigChoice) -> MethodConfig:
    """The frozen config a method runs with, from an instance, a preset name or ``None``
    (``"default"``). Every method has the presets ``paper``, ``default`` and ``fast``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if method in RESAMPLE_VARIANTS:
        if config is not None and not isinstance(config, (str, ReSampleConfig)):
            raise TypeError(f"method {method!r} takes a ReSampleConfig or a preset name, got a {type(config).__name__}")
        return replace(resolve_resample_config(config), resampling=RESAMPLE_VARIANTS[method])
    presets = _BASELINE_PRESETS[method]
    if config is None:
        return presets["default"]
    if isinstance(config, str):
        if config not in presets:
            raise ValueError(f"unknown {method} preset {config!r}; choose from {sorted(presets)}")
        return presets[config]
    return _config_of(config, type(presets["default"]), method)


def _config_of(config: MethodConfig, kind: type[C], method: str) -> C:
    """``config`` when it is the config class of ``method``; a clear error instead of a missing field later."""
    if not isinstance(config, kind):
        raise TypeError(f"method {method!r} takes a {kind.__name__} or a preset name, got a {type(config).__name__}")
    return config


def needs_prior(method: str) -> bool:
    """Whether ``method`` samples with the latent diffusion prior (all but :data:`PRIOR_FREE_METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return method not in PRIOR_FREE_METHODS


def default_preset(device: torch.device | str) -> str:
    """The preset a method runs with on ``device`` when the user names none (``fast`` on CPU,
    ``default`` on CUDA)."""
    return DEVICE_PRESETS.get(torch.device(device).type, DEVICE_PRESETS["cpu"])


def configure(method: str, preset: ConfigChoice, overrides: dict[str, Any]) -> MethodConfig:
    """``method``'s config from ``preset`` (as in :func:`resolve_method_config`) with ``overrides``.

    ``overrides`` are field names of the method's config dataclass; nested dataclasses take a
    mapping (``{"latent": {"max_iter": 20}}``), tuple fields a list.

    Raises:
        ValueError: a name that is not a field of the method's config (the message lists the known
            ones), or a value the config refuses.
    """
    return _replace_nested(resolve_method_config(method, preset), overrides, method)


def _replace_nested(config: Any, changes: dict[str, Any], where: str) -> Any:
    """``dataclasses.replace`` that descends into nested dataclass fields given as mappings."""
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ValueError(f"sampler setting(s) {unknown} are not fields of {where}'s config; known: {sorted(fields)}")
    resolved = {}
    for key, value in changes.items():
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            resolved[key] = _replace_nested(current, value, f"{where}.{key}")
        elif isinstance(current, tuple) and isinstance(value, list):
            resolved[key] = tuple(value)
        else:
            resolved[key] = value
    try:
        return dataclasses.replace(config, **resolved)
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid sampler setting for {where}: {err}") from err


def _require_prior(method: str, prior: LatentPrior | None) -> LatentPrior:
    if prior is None:
        raise ValueError(f"method {method!r} needs a prior (a LatentPrior)")
    return prior


def reconstruct(
    method: str,
    y: Tensor,
    operator: LinearOperator,
    *,
    prior: LatentPrior | None = None,
    config: ConfigChoice = None,
    noise_std: float | Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: ProgressCallback | None = None,
    n_samples: int | None = None,
) -> Reconstruction:
    """Reconstruct ``B`` slices from ``y = A x + n``.

    Args:
        method: one of :data:`METHODS`.
        y: ``(B, 1, V, D)`` measurements (linear problem, image in model units).
        operator: ``A`` with exact adjoint (and ``fbp`` for ``"fbp"``).
        prior: the latent diffusion prior (``latent_dps`` and the ``resample*`` methods).
        config: the method's frozen config or a preset name (``paper | default | fast``).
        noise_std: measurement noise std (scalar or broadcastable to ``y``); enables
            discrepancy-principle stopping.
        generator: the only randomness source.
        callback: progress / preview / cancellation hook.
        n_samples: posterior samples per slice (samplers only; deterministic methods ignore it);
            ``None``: the config's (:func:`~resample_med.sampling.config.posterior_samples`).

    Returns:
        :class:`Reconstruction`: ``image (B, 1, H, W)`` in model units, ``std`` or ``None``, ``info``.
    """
    cfg = resolve_method_config(method, config)
    if method == "fbp":
        return fbp.fbp(y, operator, _config_of(cfg, fbp.FBPConfig, method), callback=callback)
    if method == "cgls":
        return cgls.cgls(y, operator, _config_of(cfg, cgls.CGLSConfig, method), noise_std=noise_std, callback=callback)
    if method == "tv":
        return tv.tv_pdhg(y, operator, _config_of(cfg, tv.TVConfig, method), generator=generator, callback=callback)
    if method == "latent_dps":
        return latent_dps.latent_dps(
            y,
            operator,
            _require_prior(method, prior),
            _config_of(cfg, latent_dps.LatentDPSConfig, method),
            generator=generator,
            callback=callback,
            n_samples=posterior_samples(cfg, n_samples),
        )
    rec = resample(
        y,
        operator,
        _require_prior(method, prior),
        _config_of(cfg, ReSampleConfig, method),
        noise_std=noise_std,
        generator=generator,
        callback=callback,
        n_samples=n_samples,
    )
    rec.info["method"] = method
    return rec
