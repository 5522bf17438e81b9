"""Training of the latent diffusion prior: the autoencoder, then the UNet on its latents.

``train_autoencoder(AutoencoderTrainConfig)`` and ``train_diffusion(DiffusionTrainConfig)`` with
named presets (``"tiny"`` for tests, ``"cpu"``, ``"gpu"``); ``run_training(stage, args)`` is what
``resample-med train autoencoder|diffusion`` calls.
"""

from resample_med.training.autoencoder import AUTOENCODER_PRESETS, AutoencoderTrainConfig, train_autoencoder
from resample_med.training.cli import add_train_parser, run_training
from resample_med.training.diffusion import DIFFUSION_PRESETS, DiffusionTrainConfig, train_diffusion

__all__ = [
    "AUTOENCODER_PRESETS",
    "DIFFUSION_PRESETS",
    "AutoencoderTrainConfig",
    "DiffusionTrainConfig",
    "add_train_parser",
    "run_training",
    "train_autoencoder",
    "train_diffusion",
]
