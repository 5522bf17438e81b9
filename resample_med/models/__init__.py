"""The latent diffusion prior: architecture presets, the bundle, and the shipped default model."""

from resample_med._lazy import lazy_namespace

_EXPORTS: dict[str, str | None] = {
    "DEFAULT_MODEL_DIR": "bundle",
    "LatentDiffusionBundle": "bundle",
    "create_bundle": "bundle",
    "load_default_model": "bundle",
    "weights_digest": "bundle",
    "ARCHITECTURES": "config",
    "ArchitectureConfig": "config",
    "AutoencoderArchitecture": "config",
    "NoiseSchedule": "config",
    "PriorConfig": "config",
    "UNetArchitecture": "config",
    "get_architecture": "config",
}
"""Public name -> submodule defining it (``None``: a submodule), imported on first use."""

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
