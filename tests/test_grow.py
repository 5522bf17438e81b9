"""Deepening a trained UNet keeps its function and adds trainable layers on the path.

``tests/test_training.py`` trains a deepened model (``--deepen``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_bundles import noise_predictions, randomised_tiny_bundle

from resample_med.models import LatentDiffusionBundle
from resample_med.models.networks import count_parameters
from resample_med.training.grow import deepen_bundle


@pytest.mark.parametrize("layers_per_block", [1, 2])
def test_deepened_unet_computes_what_the_old_one_did(layers_per_block: int) -> None:
    bundle = randomised_tiny_bundle(layers_per_block)
    grown = deepen_bundle(bundle)
    assert grown.unet.config.layers_per_block == layers_per_block + 1
    assert grown.config.architecture.unet.layers_per_block == layers_per_block + 1
    assert count_parameters(grown.unet) > count_parameters(bundle.unet)
    before, after = noise_predictions(bundle), noise_predictions(grown)
    assert before.abs().mean() > 0.1
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_the_new_layers_are_on_the_path() -> None:
    """Perturbing only the new (zero-initialised) weights changes the output: they will learn."""
    bundle = randomised_tiny_bundle(1)
    grown = deepen_bundle(bundle)
    new_convs = [grown.unet.down_blocks[0].resnets[1].conv2, grown.unet.up_blocks[-1].resnets[1].conv2]
    for conv in new_convs:
        assert torch.count_nonzero(conv.weight) == 0
    before = noise_predictions(grown)
    for conv in new_convs:
        with torch.no_grad():
            conv.weight.normal_(0.0, 0.1)
        assert not torch.allclose(noise_predictions(grown), before, atol=1e-4)
        before = noise_predictions(grown)


def test_deepened_bundle_saves_and_loads(tmp_path: Path) -> None:
    grown = deepen_bundle(randomised_tiny_bundle(1))
    grown.save(tmp_path / "grown")
    loaded = LatentDiffusionBundle.load(tmp_path / "grown")
    assert loaded.config.architecture.unet.layers_per_block == 2
    torch.testing.assert_close(noise_predictions(loaded), noise_predictions(grown))
