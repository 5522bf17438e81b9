"""The latent diffusion bundle: shapes, the v -> epsilon conversion, strict save/load, the default model."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from resample_med.models import (
    ARCHITECTURES,
    DEFAULT_MODEL_DIR,
    LatentDiffusionBundle,
    PriorConfig,
    create_bundle,
    load_default_model,
)
from resample_med.models.networks import apply_unet, count_parameters
from resample_med.models.sample import sample_images
from resample_med.training.validation import windowed_psnr
from resample_med.units import hu_to_model, model_to_hu

MIB = 2**20


@pytest.fixture(scope="module")
def tiny() -> LatentDiffusionBundle:
    return create_bundle("tiny", seed=0)


def _disk_phantom_hu(size: int) -> torch.Tensor:
    """(1, 1, size, size) HU: air, a soft-tissue disk, a fat ring, a bone insert, a lung-like hole."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt()
    hu = torch.full((size, size), -1000.0)
    hu[r < 0.42 * size] = -90.0
    hu[r < 0.38 * size] = 40.0
    hu[((yy - 0.4 * size) ** 2 + (xx - 0.6 * size) ** 2).sqrt() < 0.06 * size] = 900.0
    hu[((yy - 0.55 * size) ** 2 + (xx - 0.35 * size) ** 2).sqrt() < 0.1 * size] = -800.0
    return hu[None, None]


def test_tiny_bundle_shapes_and_fast_creation() -> None:
    t0 = time.perf_counter()
    bundle = create_bundle("tiny", seed=1)
    assert time.perf_counter() - t0 < 5.0
    assert bundle.image_size == 32 and bundle.latent_shape == (4, 8, 8)
    x = hu_to_model(_disk_phantom_hu(32)).repeat(2, 1, 1, 1)
    z = bundle.encode(x)
    assert z.shape == (2, *bundle.latent_shape)
    assert bundle.decode(z).shape == x.shape
    assert bundle.predict_noise(z, 10).shape == z.shape
    assert bundle.predict_noise(z, torch.tensor([0, 999])).shape == z.shape
    assert bundle.scheduler.config.num_train_timesteps == 1000


def test_decode_is_differentiable(tiny: LatentDiffusionBundle) -> None:
    z = torch.zeros(1, *tiny.latent_shape, requires_grad=True)
    tiny.decode(z).square().sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_cpu_autoencoder_chunks_match_one_batched_call(
    tiny: LatentDiffusionBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU the bundle runs its autoencoder a few images at a time (faster there); per image it
    is the same function as one call on the whole batch (GroupNorm: no statistics across images),
    and gradients still reach every latent."""
    from resample_med.models import bundle as bundle_module

    z = torch.randn(5, *tiny.latent_shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    calls: list[int] = []
    real_decode = tiny.autoencoder.decode
    monkeypatch.setattr(tiny.autoencoder, "decode", lambda latent: calls.append(latent.shape[0]) or real_decode(latent))
    chunked = tiny.decode(z)
    assert sum(calls) == 5 and max(calls) <= bundle_module.CPU_AUTOENCODER_CHUNK < 5
    chunked.square().sum().backward()
    assert z.grad is not None and bool((z.grad.flatten(1).abs().sum(1) > 0).all())
    monkeypatch.setattr(bundle_module, "CPU_AUTOENCODER_CHUNK", 1000)
    calls.clear()
    with torch.no_grad():
        whole = tiny.decode(z)
        torch.testing.assert_close(tiny.encode(chunked.detach()), tiny.encode(whole), atol=1e-4, rtol=1e-4)
    assert calls == [5]
    torch.testing.assert_close(chunked.detach(), whole, atol=1e-5, rtol=1e-5)


class _VOracle(torch.nn.Module):
    """Stands in for the UNet: returns a fixed v (folded into 2x2 patches as the tiny UNet sees it)."""

    def __init__(self, v: torch.Tensor) -> None:
        super().__init__()
        self.v = torch.nn.Parameter(v, requires_grad=False)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=torch.nn.functional.pixel_unshuffle(self.v, 2))


def test_v_prediction_is_converted_to_epsilon(tiny: LatentDiffusionBundle) -> None:
    """If the UNet outputs the exact v = sqrt(ab) eps - sqrt(1-ab) z0, predict_noise returns eps."""
    assert tiny.scheduler.config.prediction_type == "v_prediction"
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(3, *tiny.latent_shape, generator=g), torch.randn(3, *tiny.latent_shape, generator=g)
    t = torch.tensor([5, 400, 990])
    zt = tiny.scheduler.add_noise(z0, eps, t)
    v = tiny.scheduler.get_velocity(z0, eps, t)
    bundle = LatentDiffusionBundle(tiny.autoencoder, _VOracle(v), tiny.scheduler, tiny.config)
    torch.testing.assert_close(bundle.predict_noise(zt, t), eps, atol=1e-5, rtol=1e-5)


def test_patched_unet_matches_manual_unshuffle(tiny: LatentDiffusionBundle) -> None:
    z = torch.randn(2, *tiny.latent_shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3, 700])
    manual = torch.nn.functional.pixel_shuffle(tiny.unet(torch.nn.functional.pixel_unshuffle(z, 2), t).sample, 2)
    torch.testing.assert_close(apply_unet(tiny.unet, z, t, 2), manual)


def test_save_load_round_trip_is_bit_identical(tiny: LatentDiffusionBundle, tmp_path: Path) -> None:
    tiny.set_latent_scale_factor(1.7)
    tiny.save(tmp_path / "m")
    loaded = LatentDiffusionBundle.load(tmp_path / "m")
    for name in ("autoencoder", "unet"):
        a, b = getattr(tiny, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.config == tiny.config
    assert loaded.latent_scale_factor == 1.7
    x = hu_to_model(_disk_phantom_hu(32))
    z = tiny.encode(x)
    assert torch.equal(loaded.encode(x), z)
    assert torch.equal(loaded.decode(z), tiny.decode(z))
    assert torch.equal(loaded.predict_noise(z, 321), tiny.predict_noise(z, 321))
    for key, value in tiny.config.architecture.schedule.diffusers_kwargs().items():
        assert loaded.scheduler.config[key] == value
    assert torch.equal(loaded.scheduler.alphas_cumprod, tiny.scheduler.alphas_cumprod)


def test_half_precision_save_loads_as_float32(tiny: LatentDiffusionBundle, tmp_path: Path) -> None:
    tiny.save(tmp_path / "h", half=True)
    stored = load_file(next((tmp_path / "h" / "unet").glob("*.safetensors")))
    assert all(v.dtype == torch.float16 for v in stored.values())
    loaded = LatentDiffusionBundle.load(tmp_path / "h")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert all(p.dtype == torch.float32 for p in tiny.parameters())


def test_load_is_strict_about_missing_weights(tiny: LatentDiffusionBundle, tmp_path: Path) -> None:
    tiny.save(tmp_path / "s")
    weights = next((tmp_path / "s" / "unet").glob("*.safetensors"))
    tensors = load_file(weights)
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, weights)
    with pytest.raises(ValueError, match="unet"):
        LatentDiffusionBundle.load(tmp_path / "s")


def test_missing_folder_and_config_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        LatentDiffusionBundle.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="prior_config.json"):
        LatentDiffusionBundle.load(tmp_path / "empty")


def test_prior_config_json_round_trip(tmp_path: Path) -> None:
    cfg = PriorConfig(ARCHITECTURES["cpu"], latent_scale_factor=0.5, data={"slices": 3}, training={"steps": 7})
    cfg.save(tmp_path / "p.json")
    assert PriorConfig.load(tmp_path / "p.json") == cfg
    assert ARCHITECTURES["cpu"].latent_shape == (4, 64, 64)


def test_unconditional_sampling_is_seeded(tiny: LatentDiffusionBundle) -> None:
    a = sample_images(tiny, 2, 3, torch.Generator().manual_seed(5))
    b = sample_images(tiny, 2, 3, torch.Generator().manual_seed(5))
    assert a.shape == (2, 1, 32, 32) and torch.isfinite(a).all()
    assert torch.equal(a, b)


# --- the shipped default model -----------------------------------------------------------------

requires_default = pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / "prior_config.json").is_file(),
    reason=f"{DEFAULT_MODEL_DIR} is absent (the default model has not been trained into this checkout)",
)


def _val_like_slice() -> torch.Tensor:
    """A real CT slice on the model grid (sample_data/ via resample_med.io), else a disk phantom."""
    try:
        from resample_med.io import iter_model_slices, load_sample_ct

        hu = next(iter(iter_model_slices(load_sample_ct("head"), size=256))).hu
        return torch.as_tensor(np.asarray(hu, dtype=np.float32))[None, None]
    except ImportError:
        return _disk_phantom_hu(256)


@requires_default
def test_default_model_files_fit_the_size_limits() -> None:
    files = [p for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file()]
    assert all(p.stat().st_size < 16 * MIB for p in files), [(p.name, p.stat().st_size) for p in files]
    assert sum(p.stat().st_size for p in files) < 64 * MIB
    assert (DEFAULT_MODEL_DIR / "MODEL_CARD.md").is_file()


@requires_default
@pytest.mark.slow
def test_default_model_loads_offline_and_reconstructs_a_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundle = load_default_model(device="cpu")
    assert bundle.image_size == 256 and bundle.latent_shape == (4, 64, 64)
    assert count_parameters(bundle.unet) > 0 and bundle.latent_scale_factor > 0
    lo, hi = bundle.config.hu_clip
    hu = _val_like_slice().clamp(lo, hi)
    with torch.no_grad():
        z = bundle.encode(hu_to_model(hu))
        rec = model_to_hu(bundle.decode(z))
        eps = bundle.predict_noise(z, 500)
    assert z.shape == (1, 4, 64, 64) and torch.isfinite(eps).all()
    assert 0.3 < float(z.std()) < 3.0  # the scale factor makes latents roughly unit variance
    assert float(windowed_psnr(rec, hu)) > 30.0


def test_architecture_presets_are_consistent() -> None:
    for name, arch in ARCHITECTURES.items():
        assert arch.name == name
        assert arch.image_size % arch.autoencoder.downsampling_factor == 0
        assert arch.latent_shape[1] % arch.unet.patch_size == 0
    with pytest.raises(ValueError, match="unknown architecture"):
        create_bundle("huge")
    bad = dataclasses.replace(ARCHITECTURES["tiny"].unet, attention_levels=(True,))
    with pytest.raises(ValueError, match="attention_levels"):
        bad.diffusers_kwargs(4, 8)
