"""The latent diffusion prior: architecture presets, the bundle, and the shipped default model."""

from resample_med.models.bundle import (
    DEFAULT_MODEL_DIR,
    LatentDiffusionBundle,
    create_bundle,
    load_default_model,
)
from resample_med.models.config import (
    ARCHITECTURES,
    ArchitectureConfig,
    AutoencoderArchitecture,
    NoiseSchedule,
    PriorConfig,
    UNetArchitecture,
    get_architecture,
)

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL_DIR",
    "ArchitectureConfig",
    "AutoencoderArchitecture",
    "LatentDiffusionBundle",
    "NoiseSchedule",
    "PriorConfig",
    "UNetArchitecture",
    "create_bundle",
    "get_architecture",
    "load_default_model",
]
