"""Architecture presets and the prior's own configuration (``prior_config.json``).

Every number that shapes the latent diffusion model lives here, in frozen dataclasses with named
presets: the autoencoder (a diffusers ``AutoencoderKL``, downsampling factor 4), the latent UNet (a
diffusers ``UNet2DModel``) and the DDIM noise schedule (T = 1000 training steps). ``PriorConfig``
adds what a user of the weights must know: the HU clipping and normalisation, the latent scale
factor measured on the training data, and a summary of the data and of the training run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resample_med.units import HU_PER_MODEL_UNIT

HU_CLIP: tuple[float, float] = (-1024.0, 3071.0)
"""HU range of the training data (the 12-bit CT range); inputs are clipped to it."""

DISPLAY_WINDOW_HU: tuple[float, float] = (-1000.0, 1000.0)
"""HU window in which reconstruction quality (PSNR) is reported, mapped to [0, 1]."""


@dataclass(frozen=True)
class AutoencoderArchitecture:
    """A 1-channel diffusers ``AutoencoderKL``; one down block per entry of ``block_out_channels``.

    With ``n`` blocks the spatial downsampling factor is ``2 ** (n - 1)``. The mid-block attention is
    off by default so the network is fully convolutional and can be trained on random crops.
    """

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    mid_block_attention: bool = False

    @property
    def downsampling_factor(self) -> int:
        """Image size / latent size."""
        return 2 ** (len(self.block_out_channels) - 1)

    def diffusers_kwargs(self, image_size: int) -> dict[str, Any]:
        """Keyword arguments for ``diffusers.AutoencoderKL``."""
        n_blocks = len(self.block_out_channels)
        return {
            "in_channels": 1,
            "out_channels": 1,
            "down_block_types": ("DownEncoderBlock2D",) * n_blocks,
            "up_block_types": ("UpDecoderBlock2D",) * n_blocks,
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "latent_channels": self.latent_channels,
            "norm_num_groups": self.norm_num_groups,
            "sample_size": image_size,
            "mid_block_add_attention": self.mid_block_attention,
        }


@dataclass(frozen=True)
class UNetArchitecture:
    """A diffusers ``UNet2DModel`` on the latents.

    ``patch_size`` p > 1 folds p x p latent pixels into channels before the UNet (pixel unshuffle,
    as the patch size of DiT, Peebles & Xie 2023): a (C, h, w) latent becomes (C p^2, h/p, w/p),
    which makes each step about p^2 times cheaper; the output is unfolded back.
    ``attention_levels[i]`` says whether resolution level ``i`` (0 = the UNet's input resolution)
    uses self-attention blocks; the mid block has one unless ``mid_attention`` is False.
    """

    block_out_channels: tuple[int, ...] = (64, 128, 128)
    layers_per_block: int = 1
    attention_levels: tuple[bool, ...] = (False, False, True)
    mid_attention: bool = True
    attention_head_dim: int = 32
    norm_num_groups: int = 32
    patch_size: int = 1

    def diffusers_kwargs(self, latent_channels: int, latent_size: int) -> dict[str, Any]:
        """Keyword arguments for ``diffusers.UNet2DModel`` on (C p^2, h/p, w/p) inputs."""
        if latent_size % self.patch_size:
            raise ValueError(f"latent size {latent_size} is not a multiple of patch_size {self.patch_size}")
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError(
                "UNetArchitecture.attention_levels must have one entry per "
                f"block ({len(self.block_out_channels)}), got {len(self.attention_levels)}"
            )
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in self.attention_levels)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(self.attention_levels))
        return {
            "sample_size": latent_size // self.patch_size,
            "in_channels": latent_channels * self.patch_size**2,
            "out_channels": latent_channels * self.patch_size**2,
            "down_block_types": down,
            "up_block_types": up,
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "attention_head_dim": self.attention_head_dim,
            "norm_num_groups": self.norm_num_groups,
            "add_attention": self.mid_attention,
        }


@dataclass(frozen=True)
class NoiseSchedule:
    """The DDPM/DDIM forward process: ``beta_t`` for t = 1..T and what the UNet predicts.

    ``prediction_type`` is ``"epsilon"`` or ``"v_prediction"`` (Salimans & Ho 2022,
    ``v = sqrt(ab_t) eps - sqrt(1 - ab_t) z_0``); the bundle always exposes epsilon.
    """

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "v_prediction"

    def diffusers_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``diffusers.DDIMScheduler``."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": self.prediction_type,
            "clip_sample": False,
            "set_alpha_to_one": False,
            "steps_offset": 1,
        }


@dataclass(frozen=True)
class ArchitectureConfig:
    """The whole latent diffusion model's shape: image size, autoencoder, UNet, noise schedule."""

    name: str
    image_size: int
    autoencoder: AutoencoderArchitecture
    unet: UNetArchitecture
    schedule: NoiseSchedule = NoiseSchedule()

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the latents for an ``image_size`` square image."""
        s = self.image_size // self.autoencoder.downsampling_factor
        return (self.autoencoder.latent_channels, s, s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchitectureConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=d["name"],
            image_size=int(d["image_size"]),
            autoencoder=_tuples(AutoencoderArchitecture, d["autoencoder"]),
            unet=_tuples(UNetArchitecture, d["unet"]),
            schedule=_tuples(NoiseSchedule, d["schedule"]),
        )


def _tuples(cls: type, d: dict[str, Any]) -> Any:
    """Build a dataclass from a JSON dict, turning lists back into tuples."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


ARCHITECTURES: dict[str, ArchitectureConfig] = {
    # Unit tests: 32x32 images, 8x8 latents, loads and runs in well under a second.
    "tiny": ArchitectureConfig(
        name="tiny",
        image_size=32,
        autoencoder=AutoencoderArchitecture(block_out_channels=(8, 16, 16), latent_channels=4, norm_num_groups=8),
        unet=UNetArchitecture(
            block_out_channels=(16, 32),
            attention_levels=(False, True),
            attention_head_dim=8,
            norm_num_groups=8,
            patch_size=2,
        ),
    ),
    # Sized to train on a 2-core CPU in about two hours: 0.9M-parameter autoencoder, 4.5M-parameter
    # UNet on 2x2 latent patches (measured: 1.8 CPU-s per batch of 32 vs 8.7 s without patches).
    "cpu": ArchitectureConfig(
        name="cpu",
        image_size=256,
        autoencoder=AutoencoderArchitecture(block_out_channels=(32, 64, 64)),
        unet=UNetArchitecture(block_out_channels=(64, 128, 128), attention_levels=(False, False, True), patch_size=2),
    ),
    # The shipped autoencoder (so its latent space) under a 1.5x wider UNet: 1.68x the "cpu" UNet's
    # time per evaluation on a CPU (benchmarks/results/prior_recipe_speed_deepened.md), inside the 3x
    # that keeps ReSample's `fast` interactive. From scratch it needs a GPU (CONTRIBUTING.md).
    "wide": ArchitectureConfig(
        name="wide",
        image_size=256,
        autoencoder=AutoencoderArchitecture(block_out_channels=(32, 64, 64)),
        unet=UNetArchitecture(block_out_channels=(96, 192, 192), attention_levels=(False, False, True), patch_size=2),
    ),
    # The design card's GPU size (f4 autoencoder 64-128-256, wider UNet); waits for a device.
    "full": ArchitectureConfig(
        name="full",
        image_size=256,
        autoencoder=AutoencoderArchitecture(block_out_channels=(64, 128, 256)),
        unet=UNetArchitecture(block_out_channels=(128, 256, 256), attention_levels=(False, True, True)),
    ),
}


def get_architecture(architecture: str | ArchitectureConfig) -> ArchitectureConfig:
    """A preset of :data:`ARCHITECTURES` by name or the config itself."""
    if isinstance(architecture, ArchitectureConfig):
        return architecture
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture preset {architecture!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture]


@dataclass(frozen=True)
class PriorConfig:
    """What travels beside the weights in ``prior_config.json``.

    Images enter the model in model units ``x = HU / hu_per_model_unit`` after clipping HU to
    ``hu_clip``; latents are the autoencoder's posterior mean times ``latent_scale_factor``
    (``1 / std`` of the unscaled latents, measured on the training data), so they have unit variance
    as the diffusion model assumes.
    """

    architecture: ArchitectureConfig
    latent_scale_factor: float = 1.0
    hu_clip: tuple[float, float] = HU_CLIP
    hu_per_model_unit: float = HU_PER_MODEL_UNIT
    display_window_hu: tuple[float, float] = DISPLAY_WINDOW_HU
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def model_clip(self) -> tuple[float, float]:
        """``hu_clip`` in model units."""
        return (self.hu_clip[0] / self.hu_per_model_unit, self.hu_clip[1] / self.hu_per_model_unit)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["architecture"] = self.architecture.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PriorConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            architecture=ArchitectureConfig.from_dict(d["architecture"]),
            latent_scale_factor=float(d["latent_scale_factor"]),
            hu_clip=tuple(d["hu_clip"]),
            hu_per_model_unit=float(d["hu_per_model_unit"]),
            display_window_hu=tuple(d["display_window_hu"]),
            data=dict(d.get("data", {})),
            training=dict(d.get("training", {})),
            metrics=dict(d.get("metrics", {})),
        )

    def save(self, path: str | Path) -> None:
        """Write as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PriorConfig:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: prior_config.json is missing (not a resample-med model folder?)")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a valid prior_config.json ({exc})") from exc
