"""CT-suited data augmentation on batches of slices in model units.

Random flips, small in-plane rotations and zoom-outs (about the image centre, air outside the
field), random square crops and a small HU jitter ``HU' = (1 + s) HU + o`` with ``|s| <= scale``, ``|o| <= offset``
(scanner calibration varies by a few HU). Everything draws from one explicit ``torch.Generator``.

Zoom-out: a slice reconstructed on a tight field of view fills the whole 256x256 model grid, while a
scanner's whole field of view (what the model grid keeps for a user's series) puts the body at
60-90% of the frame (pixel size 1.36-2.15 mm in ``ct_extra_hu256.npz``). Shrinking a slice by a
factor s in ``zoom_range`` about the centre, padding with air, covers that range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from resample_med.models.config import HU_CLIP
from resample_med.units import HU_PER_MODEL_UNIT

AIR_MODEL_UNITS = HU_CLIP[0] / HU_PER_MODEL_UNIT
"""Fill value outside the rotated field of view (air at the clip floor)."""


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation knobs; ``crop_size=None`` keeps the full slice."""

    hflip_prob: float = 0.5
    vflip_prob: float = 0.5
    max_rotation_deg: float = 10.0
    crop_size: int | None = None
    hu_scale_jitter: float = 0.01
    hu_offset_jitter: float = 10.0
    zoom_range: tuple[float, float] = (1.0, 1.0)


NO_AUGMENT = AugmentConfig(0.0, 0.0, 0.0, None, 0.0, 0.0)


def _uniform(n: int, bound: float, generator: torch.Generator) -> torch.Tensor:
    """n samples of U(-bound, bound)."""
    return (torch.rand(n, generator=generator) * 2.0 - 1.0) * bound


def rotate_and_zoom(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Rotate each slice of ``x`` (B, C, H, W) by ``angle`` (B,) radians and shrink it by ``scale`` (B,).

    About the image centre, bilinear, air outside the original field of view. ``scale`` < 1
    zooms out (the body gets smaller); 1 keeps the size.
    """
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x - AIR_MODEL_UNITS, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x + AIR_MODEL_UNITS


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch ``x`` (B, C, H, W) in model units -> (B, C, c, c) with c = crop size or H.

    The generator must live on the CPU; the draws are moved to ``x.device``.
    """
    b, _, h, w = x.shape
    dev = x.device
    flip_h = torch.rand(b, generator=generator) < cfg.hflip_prob
    flip_v = torch.rand(b, generator=generator) < cfg.vflip_prob
    x = torch.where(flip_h.to(dev)[:, None, None, None], x.flip(-1), x)
    x = torch.where(flip_v.to(dev)[:, None, None, None], x.flip(-2), x)
    if cfg.max_rotation_deg > 0 or cfg.zoom_range != (1.0, 1.0):
        angle = _uniform(b, math.radians(cfg.max_rotation_deg), generator).to(dev)
        lo, hi = cfg.zoom_range
        scale = torch.ones(b) if lo == hi == 1.0 else lo + (hi - lo) * torch.rand(b, generator=generator)
        x = rotate_and_zoom(x, angle, scale.to(dev))
    if cfg.crop_size is not None and cfg.crop_size < min(h, w):
        c = cfg.crop_size
        top = torch.randint(0, h - c + 1, (b,), generator=generator)
        left = torch.randint(0, w - c + 1, (b,), generator=generator)
        x = torch.stack([x[i, :, t : t + c, s : s + c] for i, (t, s) in enumerate(zip(top.tolist(), left.tolist()))])
    if cfg.hu_scale_jitter > 0 or cfg.hu_offset_jitter > 0:
        scale = 1.0 + _uniform(b, cfg.hu_scale_jitter, generator).to(dev)
        offset = _uniform(b, cfg.hu_offset_jitter / HU_PER_MODEL_UNIT, generator).to(dev)
        # jitter HU around water (0): HU' = (1 + s) HU + o, i.e. the same in model units
        x = x * scale[:, None, None, None] + offset[:, None, None, None]
    lo, hi = HU_CLIP
    return x.clamp(lo / HU_PER_MODEL_UNIT, hi / HU_PER_MODEL_UNIT)
