"""Training stages on tiny models and a synthetic phantom npz: losses fall, resume and init-from work."""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_bundles import noise_predictions, randomised_tiny_bundle

import resample_med.training.diffusion as diffusion_module
from resample_med.models import LatentDiffusionBundle
from resample_med.models.config import get_architecture
from resample_med.models.networks import apply_unet, build_scheduler, build_unet
from resample_med.models.sample import sample_images
from resample_med.training import (
    AUTOENCODER_PRESETS,
    DIFFUSION_PRESETS,
    add_train_parser,
    run_training,
    train_autoencoder,
    train_diffusion,
)
from resample_med.training.augment import NO_AUGMENT, AugmentConfig, augment
from resample_med.training.autoencoder import encoder_state_hash, load_autoencoder, validate_autoencoder
from resample_med.training.data import SliceSelection, load_npz_slices
from resample_med.training.diffusion import set_dropout, validation_loss
from resample_med.training.ema import EMA
from resample_med.training.loss_log import LossLog
from resample_med.training.runtime import resolve_cpu_bf16
from resample_med.training.schedule import LRSchedule
from resample_med.training.validation import wasserstein1_hu
from resample_med.units import hu_to_model, model_to_hu

SIZE = 32


@pytest.fixture(scope="module")
def phantom_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 disk phantoms in HU (10 train / 2 val; one train slice 'nc' to test the licence filter)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = []
    for _ in range(12):
        img = np.full((SIZE, SIZE), -1000.0)
        cy, cx, r = rng.uniform(13, 19), rng.uniform(13, 19), rng.uniform(8, 13)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(-50, 60)
        img[(yy - cy) ** 2 + (xx - cx - r / 2) ** 2 < (r / 4) ** 2] = rng.uniform(400, 1200)
        images.append(img)
    path = tmp_path_factory.mktemp("data") / "phantoms.npz"
    np.savez(
        path,
        images_hu=np.array(images, dtype=np.int16),
        split=np.array(["train"] * 10 + ["val"] * 2),
        license_class=np.array(["open"] * 9 + ["nc"] + ["open"] * 2),
        source=np.array(["phantom"] * 12),
        patient=np.array([f"p{i // 2}" for i in range(12)]),
    )
    return path


@pytest.fixture(scope="module")
def trained_ae(phantom_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny autoencoder run folder (20 steps)."""
    out = tmp_path_factory.mktemp("ae")
    train_autoencoder(dataclasses.replace(AUTOENCODER_PRESETS["tiny"], data=(str(phantom_npz),), out_dir=str(out)))
    return out


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def test_npz_selection_by_split_and_licence(phantom_npz: Path) -> None:
    train = load_npz_slices(phantom_npz)
    assert len(train) == 9 and train.summary["slices_per_license_class"] == {"open": 9}
    assert train.summary["patients"] == 5
    assert len(load_npz_slices(phantom_npz, SliceSelection(license_classes=None))) == 10
    assert train.model_units(slice(0, 2)).shape == (2, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="no slice matches"):
        load_npz_slices(phantom_npz, SliceSelection(splits=("test",)))


def test_augment_shapes_determinism_and_identity() -> None:
    x = hu_to_model(torch.linspace(-1000, 2000, 2 * SIZE * SIZE).reshape(2, 1, SIZE, SIZE))
    cfg = AugmentConfig(crop_size=16)
    a = augment(x, cfg, torch.Generator().manual_seed(3))
    b = augment(x, cfg, torch.Generator().manual_seed(3))
    assert a.shape == (2, 1, 16, 16) and torch.equal(a, b)
    assert a.min() >= -1.024 and a.max() <= 3.071
    torch.testing.assert_close(augment(x, NO_AUGMENT, torch.Generator()), x)


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    s = LRSchedule(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert s(0, 0.0) == pytest.approx(1e-4)
    assert s(10, 0.0) == pytest.approx(1e-3)
    assert s(50, 0.5) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert s(99, 1.0) == pytest.approx(1e-4)


def test_autoencoder_loss_falls_and_validation_is_logged(trained_ae: Path) -> None:
    log = LossLog(trained_ae)
    l1 = [r["l1"] for r in log.read("train")]
    assert len(l1) == 20
    assert _mean(l1[-5:]) < 0.6 * _mean(l1[:3])
    val = log.read("val")
    assert val and {"psnr_db", "hu_rmse"} <= set(val[-1])
    assert (trained_ae / "autoencoder" / "config.json").is_file()
    summary = json.loads((trained_ae / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["data"]["slices"] == 9


def test_autoencoder_resume_continues_the_step_count(trained_ae: Path, phantom_npz: Path, tmp_path: Path) -> None:
    run = tmp_path / "ae"
    base = dataclasses.replace(AUTOENCODER_PRESETS["tiny"], data=(str(phantom_npz),), out_dir=str(run), max_steps=6)
    train_autoencoder(base)
    summary = train_autoencoder(dataclasses.replace(base, resume=True, max_steps=9))
    assert summary["steps"] == 9 and summary["steps_this_run"] == 3
    assert [r["step"] for r in LossLog(run).read("train")] == list(range(1, 10))


def test_autoencoder_ships_its_best_averaged_weights(trained_ae: Path, phantom_npz: Path, tmp_path: Path) -> None:
    """With an EMA and keep_best, the weights with the highest val PSNR ship, the starting weights
    of a continued run included, and a resumed run keeps competing against the stored best."""
    run = tmp_path / "ae"
    cfg = dataclasses.replace(
        AUTOENCODER_PRESETS["tiny"],
        data=(str(phantom_npz),),
        out_dir=str(run),
        init_from=str(trained_ae),
        lr=5e-2,  # large enough that some validated weights are worse than others
        trainable="decoder",
        ema_decay=0.9,
        keep_best=True,
        val_every=3,
        max_steps=7,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = train_autoencoder(cfg)
        summary = train_autoencoder(dataclasses.replace(cfg, resume=True, max_steps=9))
    # each run that ships its starting weights (step 0) says so
    said_so = sum("step 0's weights" in str(w.message) for w in caught)
    assert said_so == [first["selected_step"], summary["selected_step"]].count(0)
    psnr = {r["step"]: r["psnr_db"] for r in LossLog(run).read("val")}
    assert sorted(psnr) == [0, 3, 6, 7, 9]  # start, every val_every steps, each run's last weights
    assert len(set(psnr.values())) > 1
    best_step = max(psnr, key=psnr.get)
    assert summary["selected_step"] == best_step
    assert summary["val"]["psnr_db"] == pytest.approx(psnr[best_step], abs=1e-4)
    shipped = load_autoencoder(run)  # the saved folder holds the selected weights
    val = load_npz_slices(phantom_npz, cfg.val_selection)
    again = validate_autoencoder(shipped, val, torch.device("cpu"), 8)
    assert again["psnr_db"] == pytest.approx(psnr[best_step], abs=1e-4)
    # the average of a decoder-only fine-tune keeps the encoder, so the latent space
    assert encoder_state_hash(shipped) == encoder_state_hash(load_autoencoder(trained_ae))


def test_diffusion_trains_resumes_and_saves_a_bundle(trained_ae: Path, phantom_npz: Path, tmp_path: Path) -> None:
    run = tmp_path / "dm"
    cfg = dataclasses.replace(
        DIFFUSION_PRESETS["tiny"], data=(str(phantom_npz),), out_dir=str(run), autoencoder=str(trained_ae)
    )
    summary = train_diffusion(cfg)
    assert summary["steps"] == 20
    bundle = LatentDiffusionBundle.load(run / "model")
    assert bundle.latent_scale_factor == pytest.approx(summary["latent_scale_factor"])
    assert bundle.config.training["autoencoder"]["steps"] == 20
    assert bundle.config.data["slices"] == 9
    assert Path(summary["samples_png"]).is_file()

    # the held-out denoising loss (fixed noise and timesteps) is lower than the untrained UNet's
    cached = torch.load(run / "latents.pt")["levels"]
    val_z = next(iter(cached.values()))[:8] * bundle.latent_scale_factor
    untrained = train_diffusion(dataclasses.replace(cfg, out_dir=str(tmp_path / "dm0"), max_steps=0))
    fresh = LatentDiffusionBundle.load(tmp_path / "dm0" / "model")
    patch = bundle.config.architecture.unet.patch_size
    before = validation_loss(fresh.unet, fresh.scheduler, val_z, 0, 5.0, 8, patch)
    after = validation_loss(bundle.unet, bundle.scheduler, val_z, 0, 5.0, 8, patch)
    assert untrained["steps"] == 0 and after < before

    resumed = train_diffusion(dataclasses.replace(cfg, resume=True, max_steps=24))
    assert resumed["steps"] == 24 and resumed["steps_this_run"] == 4


def test_diffusion_ships_the_weights_with_the_lowest_val_loss(
    trained_ae: Path, phantom_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "dm"
    cfg = dataclasses.replace(
        DIFFUSION_PRESETS["tiny"],
        data=(str(phantom_npz),),
        out_dir=str(run),
        autoencoder=str(trained_ae),
        lr=5e-2,
        val_every=4,
        max_steps=18,
    )
    summary = train_diffusion(cfg)
    val = {r["step"]: r["loss"] for r in LossLog(run).read("val")}
    assert sorted(val) == [4, 8, 12, 16, 18]  # every val_every steps, and the last weights
    best_step = min(val, key=val.get)
    assert summary["selected_step"] == best_step
    assert summary["val_loss_ema"] == pytest.approx(val[best_step], rel=1e-5)

    # a run continuing from a bundle lets the starting weights compete (step 0)
    cont = dataclasses.replace(
        cfg, out_dir=str(tmp_path / "cont"), autoencoder=None, init_from=str(run / "model"), max_steps=8
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train_diffusion(cont)
    val = {r["step"]: r["loss"] for r in LossLog(tmp_path / "cont").read("val")}
    assert sorted(val) == [0, 4, 8]
    assert summary["selected_step"] == min(val, key=val.get)

    # when the starting weights win, the run says that nothing it trained was kept, and how to keep it
    said_so = any("step 0's weights" in str(w.message) for w in caught)
    assert said_so == (summary["selected_step"] == 0)
    # (the command line prints it as one line, without our source file)
    frozen = {"data": [str(phantom_npz)], "preset": "tiny", "out": str(tmp_path / "frozen"), "lr": 0.0}
    capsys.readouterr()
    summary = run_training("diffusion", frozen | {"init_from": str(run / "model"), "max_steps": 8, "val_every": 4})
    assert summary["selected_step"] == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith("resample-med train: warning: ")
    assert "step 0's weights" in warning[0] and warning[0].endswith("--resume --max-steps 8 --no-keep-best")


def test_diffusion_can_select_the_weights_on_their_samples(trained_ae: Path, phantom_npz: Path, tmp_path: Path) -> None:
    run = tmp_path / "dm"
    cfg = dataclasses.replace(
        DIFFUSION_PRESETS["tiny"],
        data=(str(phantom_npz),),
        out_dir=str(run),
        autoencoder=str(trained_ae),
        lr=5e-2,
        val_every=4,
        max_steps=12,
        select_on="sample_w1",
    )
    summary = train_diffusion(cfg)
    records = {r["step"]: r for r in LossLog(run).read("val")}
    w1 = {step: r["sample_w1"] for step, r in records.items()}
    assert sorted(w1) == [4, 8, 12] and len(set(w1.values())) > 1
    best_step = min(w1, key=w1.get)
    assert summary["selected_step"] == best_step and summary["selected_on"] == "sample_w1"
    assert summary["selection_score"] == pytest.approx(w1[best_step])
    assert summary["val_loss_ema"] == pytest.approx(records[best_step]["loss"], rel=1e-5)

    # the shipped weights are the selected ones: their samples score the logged W1 again
    bundle = LatentDiffusionBundle.load(run / "model")
    images = sample_images(bundle, cfg.select_samples, cfg.select_sample_steps, torch.Generator().manual_seed(1))
    val = load_npz_slices(phantom_npz, cfg.val_selection)
    assert wasserstein1_hu(model_to_hu(images), model_to_hu(val.model_units())) == pytest.approx(
        w1[best_step], rel=1e-3
    )

    with pytest.raises(ValueError, match="--select-on must be one of"):
        train_diffusion(dataclasses.replace(cfg, select_on="fid"))


def test_sample_selection_skips_weights_whose_loss_rose(trained_ae: Path, phantom_npz: Path, tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        DIFFUSION_PRESETS["tiny"],
        data=(str(phantom_npz),),
        out_dir=str(tmp_path / "dm"),
        autoencoder=str(trained_ae),
        lr=5e-2,
        val_every=2,
        max_steps=12,
        select_on="sample_w1",
        select_max_loss_rise=0.0,  # only weights at the run's lowest loss so far are eligible
    )
    summary = train_diffusion(cfg)
    records = LossLog(tmp_path / "dm").read("val")
    lowest = float("inf")
    for r in records:
        lowest = min(lowest, r["loss"])
        assert r["eligible"] == (r["loss"] <= lowest)
    eligible = {r["step"]: r["sample_w1"] for r in records if r["eligible"]}
    assert summary["selected_step"] == min(eligible, key=eligible.get)


def test_diffusion_init_from_keeps_weights_and_scale(trained_ae: Path, phantom_npz: Path, tmp_path: Path) -> None:
    first = dataclasses.replace(
        DIFFUSION_PRESETS["tiny"],
        data=(str(phantom_npz),),
        out_dir=str(tmp_path / "a"),
        autoencoder=str(trained_ae),
        max_steps=3,
    )
    train_diffusion(first)
    source = LatentDiffusionBundle.load(tmp_path / "a" / "model")
    cont = dataclasses.replace(
        first, out_dir=str(tmp_path / "b"), autoencoder=None, init_from=str(tmp_path / "a" / "model"), max_steps=0
    )
    train_diffusion(cont)
    continued = LatentDiffusionBundle.load(tmp_path / "b" / "model")
    assert continued.latent_scale_factor == source.latent_scale_factor
    a, b = source.unet.state_dict(), continued.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "continued_from" in continued.config.training


def test_training_deepens_the_init_from_model(tmp_path: Path, phantom_npz: Path) -> None:
    source = randomised_tiny_bundle(1)
    source.save(tmp_path / "source")
    cfg = dataclasses.replace(
        DIFFUSION_PRESETS["tiny"],
        data=(str(phantom_npz),),
        out_dir=str(tmp_path / "run"),
        init_from=str(tmp_path / "source"),
        deepen=True,
        max_steps=0,
    )
    train_diffusion(cfg)
    trained = LatentDiffusionBundle.load(tmp_path / "run" / "model")
    assert trained.unet.config.layers_per_block == 2
    assert trained.config.training["diffusion"]["deepened"] is True
    torch.testing.assert_close(noise_predictions(trained), noise_predictions(source), atol=1e-5, rtol=1e-5)
    resumed = dataclasses.replace(cfg, max_steps=2, resume=True)
    train_diffusion(resumed)  # the checkpoint's shapes are the deepened UNet's
    assert LatentDiffusionBundle.load(tmp_path / "run" / "model").unet.config.layers_per_block == 2


def test_deepen_needs_a_model_to_grow(tmp_path: Path, phantom_npz: Path) -> None:
    cfg = dataclasses.replace(
        DIFFUSION_PRESETS["tiny"], data=(str(phantom_npz),), out_dir=str(tmp_path / "run"), deepen=True
    )
    with pytest.raises(ValueError, match="--init-from"):
        train_diffusion(cfg)


def test_cli_registers_both_stages_and_runs(trained_ae: Path, phantom_npz: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "train",
            "autoencoder",
            "--data",
            str(phantom_npz),
            "--preset",
            "tiny",
            "--out",
            str(tmp_path / "cli"),
            "--max-steps",
            "3",
            "--crop-size",
            "8",
            "--device",
            "cpu",
        ]
    )
    assert args.stage == "autoencoder" and callable(args.func)
    summary = args.func(args)
    assert summary["steps"] == 3
    config = json.loads((tmp_path / "cli" / "train_config.json").read_text())
    assert config["augment"]["crop_size"] == 8 and config["architecture"] == "tiny"
    with pytest.raises(ValueError, match="unknown training stage"):
        run_training("vae", {"data": [str(phantom_npz)], "out": str(tmp_path)})


def test_training_slices_from_a_dicom_file() -> None:
    from resample_med.io import sample_ct_path
    from resample_med.training.data import load_slices

    slices = load_slices([sample_ct_path("small")])
    assert len(slices) == 1 and slices.hu.shape == (1, 256, 256)
    assert slices.hu.dtype == torch.int16 and int(slices.hu.min()) >= -1024
    assert slices.summary["origin"] == "volumes"


def test_patient_balance_weights_and_draws(phantom_npz: Path, tmp_path: Path) -> None:
    # second npz: one patient with 6 slices, so patients hold 2,2,2,2,1 (first file) and 6 slices
    extra = tmp_path / "extra.npz"
    np.savez(
        extra,
        images_hu=np.zeros((6, SIZE, SIZE), dtype=np.int16),
        split=np.array(["train"] * 6),
        license_class=np.array(["open"] * 6),
        patient=np.array(["p0"] * 6),
    )
    from resample_med.training.data import load_slices, load_validation_slices

    both = load_slices([phantom_npz, extra])
    assert len(both) == 15 and both.summary["patients"] == 6  # "p0" of each file are different patients
    uniform, by_patient = both.sampling_weights(0.0), both.sampling_weights(1.0)
    assert torch.allclose(uniform, torch.full((15,), 1 / 15, dtype=torch.float64))
    per_patient = torch.zeros(6, dtype=torch.float64).index_add_(
        0, torch.as_tensor(np.unique(both.patient, return_inverse=True)[1]), by_patient
    )
    assert torch.allclose(per_patient, torch.full((6,), 1 / 6, dtype=torch.float64))
    draws = both.draw(6000, 1.0, torch.Generator().manual_seed(0))
    assert abs(float((draws >= 9).double().mean()) - 1 / 6) < 0.03  # the 6-slice patient: 1/6 of draws, not 6/15
    assert torch.equal(
        both.draw(5, 0.0, torch.Generator().manual_seed(1)),
        torch.randint(0, 15, (5,), generator=torch.Generator().manual_seed(1)),
    )
    val = load_validation_slices([phantom_npz, extra], SliceSelection(splits=("val",), license_classes=None))
    assert val is not None and len(val) == 2  # only the first npz has val slices


def test_zoom_out_shrinks_the_body_and_pads_with_air() -> None:
    from resample_med.training.augment import AIR_MODEL_UNITS, rotate_and_zoom

    x = torch.full((1, 1, SIZE, SIZE), AIR_MODEL_UNITS)
    x[..., 4:-4, 4:-4] = 0.0  # water filling 24 of 32 pixels across
    z = rotate_and_zoom(x, torch.zeros(1), torch.tensor([0.5]))
    body = (z > AIR_MODEL_UNITS / 2)[0, 0]
    assert 5 <= int(body.any(0).sum()) <= 14  # about half as wide
    assert torch.allclose(z[..., :8, :], torch.full_like(z[..., :8, :], AIR_MODEL_UNITS))
    same = rotate_and_zoom(x, torch.zeros(1), torch.ones(1))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)


def test_decoder_only_fine_tune_keeps_the_latent_space(trained_ae: Path, phantom_npz: Path, tmp_path: Path) -> None:
    from resample_med.training.autoencoder import encoder_state_hash, load_autoencoder

    run = tmp_path / "dec"
    train_autoencoder(
        dataclasses.replace(
            AUTOENCODER_PRESETS["tiny"],
            data=(str(phantom_npz),),
            out_dir=str(run),
            init_from=str(trained_ae),
            trainable="decoder",
            max_steps=4,
            cpu_bf16=True,
        )
    )
    before, after = load_autoencoder(trained_ae), load_autoencoder(run)
    assert encoder_state_hash(before) == encoder_state_hash(after)
    assert not torch.equal(before.decoder.conv_out.weight, after.decoder.conv_out.weight)
    # a bundle continued with the decoder-tuned autoencoder keeps its UNet's latent scale
    first = dataclasses.replace(
        DIFFUSION_PRESETS["tiny"],
        data=(str(phantom_npz),),
        out_dir=str(tmp_path / "a"),
        autoencoder=str(trained_ae),
        max_steps=2,
    )
    train_diffusion(first)
    source = LatentDiffusionBundle.load(tmp_path / "a" / "model")
    cont = dataclasses.replace(
        first, out_dir=str(tmp_path / "b"), autoencoder=str(run), init_from=str(tmp_path / "a" / "model"), max_steps=0
    )
    train_diffusion(cont)
    continued = LatentDiffusionBundle.load(tmp_path / "b" / "model")
    assert continued.latent_scale_factor == source.latent_scale_factor
    assert torch.equal(continued.autoencoder.decoder.conv_out.weight, after.decoder.conv_out.weight)
    with pytest.raises(ValueError, match="trainable='encoder'"):
        train_autoencoder(
            dataclasses.replace(
                AUTOENCODER_PRESETS["tiny"],
                data=(str(phantom_npz),),
                out_dir=str(tmp_path / "bad"),
                trainable="encoder",
            )
        )


def test_diffusion_with_zoom_levels_and_patient_balance(
    trained_ae: Path, phantom_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = dataclasses.replace(
        DIFFUSION_PRESETS["tiny"],
        data=(str(phantom_npz),),
        out_dir=str(tmp_path / "z"),
        autoencoder=str(trained_ae),
        max_steps=3,
        zoom_levels=(1.0, 0.7),
        patient_balance=0.5,
        cpu_bf16=True,
    )
    assert train_diffusion(cfg)["steps"] == 3
    cached = torch.load(tmp_path / "z" / "latents.pt")["levels"]
    full, zoomed = cached.values()
    assert len(cached) == 2 and full.shape[0] == 9 and not torch.equal(full, zoomed)

    # a level added to the run is encoded alone; the cached levels are reused as they are

    encoded: list[tuple[float, float]] = []
    original = diffusion_module.encode_latents

    def counting(autoencoder, slices, device, batch_size, zoom=1.0, rotation_deg=0.0):  # type: ignore[no-untyped-def]
        if len(slices) == len(full):  # the training slices (the val slices are encoded once per run)
            encoded.append((zoom, rotation_deg))
        return original(autoencoder, slices, device, batch_size, zoom, rotation_deg)

    monkeypatch.setattr(diffusion_module, "encode_latents", counting)
    train_diffusion(dataclasses.replace(cfg, zoom_levels=(1.0, 0.7, 0.85), resume=True, max_steps=4))
    cached = torch.load(tmp_path / "z" / "latents.pt")["levels"]
    assert encoded == [(0.85, 0.0)] and len(cached) == 3 and torch.equal(next(iter(cached.values())), full)

    # rotations combine with every zoom level; only the new (zoom, rotation) pairs are encoded
    encoded.clear()
    rotated = dataclasses.replace(cfg, rotation_levels_deg=(0.0, 7.0), resume=True, max_steps=5)
    assert diffusion_module.latent_levels(rotated) == [(1.0, 0.0), (1.0, 7.0), (0.7, 0.0), (0.7, 7.0)]
    train_diffusion(rotated)
    cached = torch.load(tmp_path / "z" / "latents.pt")["levels"]
    assert encoded == [(1.0, 7.0), (0.7, 7.0)] and len(cached) == 5
    turned = next(v for k, v in cached.items() if k.endswith(":1.0:rotate7.0"))
    assert turned.shape == full.shape and not torch.equal(turned, full)

    # a run stopped while encoding keeps the levels it finished; the next run encodes the rest
    def stopped_at_second_level(autoencoder, slices, device, batch_size, zoom=1.0, rotation_deg=0.0):  # type: ignore[no-untyped-def]
        if len(slices) == len(full) and rotation_deg == -7.0 and zoom == 0.7:
            raise KeyboardInterrupt
        return counting(autoencoder, slices, device, batch_size, zoom, rotation_deg)

    monkeypatch.setattr(diffusion_module, "encode_latents", stopped_at_second_level)
    encoded.clear()
    more = dataclasses.replace(rotated, rotation_levels_deg=(0.0, 7.0, -7.0), max_steps=6)
    with pytest.raises(KeyboardInterrupt):
        train_diffusion(more)
    cached = torch.load(tmp_path / "z" / "latents.pt")["levels"]
    assert encoded == [(1.0, -7.0)] and len(cached) == 6 and not (tmp_path / "z" / "latents.tmp").exists()
    monkeypatch.setattr(diffusion_module, "encode_latents", counting)
    encoded.clear()
    train_diffusion(more)
    assert encoded == [(0.7, -7.0)] and len(torch.load(tmp_path / "z" / "latents.pt")["levels"]) == 7


def test_cli_sets_trainable_balance_and_bf16(trained_ae: Path, phantom_npz: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "train",
            "autoencoder",
            "--data",
            str(phantom_npz),
            "--preset",
            "tiny",
            "--out",
            str(tmp_path / "cli"),
            "--max-steps",
            "2",
            "--init-from",
            str(trained_ae),
            "--trainable",
            "decoder",
            "--patient-balance",
            "0.5",
            "--cpu-bf16",
            "--device",
            "cpu",
        ]
    )
    args.func(args)
    config = json.loads((tmp_path / "cli" / "train_config.json").read_text())
    assert (config["trainable"], config["patient_balance"], config["cpu_bf16"]) == ("decoder", 0.5, True)


def test_dropout_acts_in_training_steps_only() -> None:
    arch = get_architecture("tiny")
    unet = build_unet(arch).train()
    set_dropout(unet, 0.5)
    assert {m.p for m in unet.modules() if isinstance(m, torch.nn.Dropout)} == {0.5}
    channels, size, _ = arch.latent_shape
    patch = arch.unet.patch_size
    z, t = torch.randn(2, channels, size, size), torch.tensor([10, 500])
    with torch.no_grad():
        assert not torch.equal(apply_unet(unet, z, t, patch), apply_unet(unet, z, t, patch))
        shipped = EMA(unet, 0.999).model  # what is validated and saved
        assert torch.equal(apply_unet(shipped, z, t, patch), apply_unet(shipped, z, t, patch))
    with pytest.raises(ValueError, match="--dropout"):
        set_dropout(unet, 1.0)


def test_cli_sets_diffusion_dropout_and_keep_best(
    trained_ae: Path, phantom_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held_out_gammas = []
    measure_held_out = diffusion_module.validation_loss

    def recording_validation_loss(*args: object) -> float:
        held_out_gammas.append(args[4])
        return measure_held_out(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(diffusion_module, "validation_loss", recording_validation_loss)
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "dm"
    args = parser.parse_args(
        ["train", "diffusion", "--data", str(phantom_npz), "--preset", "tiny", "--out", str(out)]
        + [
            "--autoencoder",
            str(trained_ae),
            "--max-steps",
            "2",
            "--dropout",
            "0.2",
            "--no-keep-best",
            "--zoom-levels",
            "1",
            "0.9",
            "--rotation-levels",
            "0",
            "-5",
            "--min-snr-gamma",
            "20",
            "--device",
            "cpu",
        ]
    )
    args.func(args)
    config = json.loads((out / "train_config.json").read_text())
    assert (config["dropout"], config["keep_best"], config["min_snr_gamma"]) == (0.2, False, 20.0)
    # the held-out loss keeps its own weighting, comparable with runs trained on another gamma
    assert held_out_gammas and set(held_out_gammas) == {diffusion_module.HELD_OUT_MIN_SNR_GAMMA}
    assert (config["zoom_levels"], config["rotation_levels_deg"]) == ([1.0, 0.9], [0.0, -5.0])
    assert LatentDiffusionBundle.load(out / "model").unet.config.dropout == 0.0  # ships without it


def test_min_snr_gamma_weighs_the_low_noise_steps() -> None:
    arch = get_architecture("tiny")
    unet = build_unet(arch).eval()
    scheduler = build_scheduler(arch.schedule)
    channels, size, _ = arch.latent_shape
    z0 = torch.randn(16, channels, size, size)

    def loss(gamma: float) -> float:
        with torch.no_grad():
            generator = torch.Generator().manual_seed(0)
            value = diffusion_module.diffusion_loss(unet, scheduler, z0, generator, gamma, arch.unet.patch_size)
        return float(value)

    # gamma below every step's SNR gives each step the weight gamma / (SNR + 1); above it, SNR / (SNR + 1)
    assert loss(20.0) > loss(5.0) > loss(1.0)


def test_no_keep_best_ships_the_last_weights_of_a_finished_run(
    trained_ae: Path, phantom_npz: Path, tmp_path: Path
) -> None:
    run = tmp_path / "dm"
    cfg = dataclasses.replace(
        DIFFUSION_PRESETS["tiny"], data=(str(phantom_npz),), out_dir=str(run), autoencoder=str(trained_ae)
    )
    train_diffusion(dataclasses.replace(cfg, max_steps=10, val_every=5))
    # a diverging continuation: its last weights are not the run's best, which ship
    diverged = train_diffusion(dataclasses.replace(cfg, max_steps=14, val_every=5, lr=5.0, resume=True))
    assert diverged["selected_step"] != 14
    last = train_diffusion(dataclasses.replace(cfg, max_steps=14, resume=True, keep_best=False))
    assert last["selected_step"] == 14 and last["steps_this_run"] == 0
    assert last["val_loss_ema"] == pytest.approx(LossLog(run).read("val")[-1]["loss"], rel=1e-5)
    ema = torch.load(run / "checkpoint.pt", weights_only=True)["models"]["ema"]["model"]
    shipped = LatentDiffusionBundle.load(run / "model").unet.state_dict()
    assert all(torch.equal(shipped[k], ema[k].to(shipped[k].dtype)) for k in shipped)


@pytest.mark.parametrize("native", [False, True])
def test_presets_use_cpu_bf16_only_where_the_cpu_has_it(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # emulated bf16 doubled the time of a UNet training step on an AVX512 Xeon without AVX512-BF16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert DIFFUSION_PRESETS["cpu_continue"].cpu_bf16 is None
    assert resolve_cpu_bf16(DIFFUSION_PRESETS["cpu_continue"].cpu_bf16) is native
    assert resolve_cpu_bf16(AUTOENCODER_PRESETS["cpu_continue"].cpu_bf16) is native
    assert resolve_cpu_bf16(True) is True and resolve_cpu_bf16(False) is False  # --cpu-bf16 / --no-cpu-bf16
