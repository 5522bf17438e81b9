"""Reconstruction pixels pinned for one fixed seed: refactors must not move them.

The references in ``tests/data/pinned_*.npy`` were computed by :func:`compute` on the code
*before* the issue-19 refactors (see ``tests/data/README.md`` for the commit). A change that is
meant to alter results must regenerate them (``python tests/test_pixels_pinned.py --write``) and
say why in its commit message.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

DATA_DIR = Path(__file__).resolve().parent / "data"

SIZE = 32
"""Grid side of the tiny test prior (and of the phantom, so no resampling is involved)."""

SEED = 7
"""User seed of every pinned run (measurement noise and sampling)."""

TOLERANCE_MODEL_UNITS = {"sinogram": (1e-5, 1e-6), "tv": (1e-4, 1e-5), "resample": (1e-2, 2e-3)}
"""Name -> (largest, root-mean-square) difference allowed, in model units (HU / 1000): float32
rounding only. Another CPU rounds differently (an Intel Xeon with AVX512F against the AMD EPYC with
AVX512-BF16 that wrote the references, one thread both): sinogram 6e-8 / -, TV 1.8e-5 / 1.5e-6, and
ReSample, whose optimisation steps amplify rounding, 3.5e-3 / 5.3e-4 (3.5 HU at one pixel, 0.5 HU
RMS). A refactor that changes what is computed moves far more than these bounds."""


def phantom_volume():
    """Two 32x32 slices (HU): air, a water square, a bone insert moving with the slice index."""
    from resample_med.io import CTVolume

    hu = np.full((2, SIZE, SIZE), -1000.0, dtype=np.float32)
    q = SIZE // 4
    hu[:, q : 3 * q, q : 3 * q] = 40.0
    for k in range(2):
        hu[k, q + 2 + k : q + 6 + k, SIZE // 2 : SIZE // 2 + 4] = 900.0
    return CTVolume(
        hu=hu, spacing_mm=(2.5, 1.5, 1.5), origin_mm=np.zeros(3), direction=np.eye(3), source={"format": "test"}
    )


def compute() -> dict[str, np.ndarray]:
    """Name -> ``(2, 32, 32)`` float32 array in model units: the noisy sinogram every method sees
    (``sinogram``, its own units) and the ReSample and TV reconstructions of the phantom."""
    from resample_med.io import iter_model_slices
    from resample_med.models import create_bundle
    from resample_med.pipeline import AcquisitionConfig, reconstruct_volume
    from resample_med.pipeline.volume import simulate_model_slices
    from resample_med.sampling.config import FAST_FROM_NOISE
    from resample_med.units import hu_to_model

    volume = phantom_volume()
    acquisition = AcquisitionConfig(n_views=12, photons=1e5)
    short_resample = dataclasses.replace(  # the sampler as pinned: fast's 20-step grid cut to 3, levers off
        FAST_FROM_NOISE,
        num_steps=3,
        final_max_iter=2,
        latent=dataclasses.replace(FAST_FROM_NOISE.latent, max_iter=2),
    )
    prior = create_bundle("tiny", seed=0)
    model_slices = list(iter_model_slices(volume, size=SIZE))
    sinogram = simulate_model_slices(model_slices, acquisition, SEED).sinogram
    out = {"sinogram": sinogram.detach().cpu().numpy().astype(np.float32)}
    for method, config, p in (("resample", short_resample, prior), ("tv", "fast", None)):
        rec = reconstruct_volume(volume, acquisition, method, prior=p, config=config, batch_size=2, seed=SEED)
        out[method] = hu_to_model(rec.volume.hu).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def computed() -> dict[str, np.ndarray]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return compute()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["sinogram", "resample", "tv"])
def test_pixels_match_the_pinned_reference(computed, name):
    reference = np.load(DATA_DIR / f"pinned_{name}.npy")
    assert computed[name].shape == reference.shape
    largest, rms = TOLERANCE_MODEL_UNITS[name]
    difference = computed[name] - reference
    message = f"{name} moved: regenerate only for an intended change"
    np.testing.assert_allclose(computed[name], reference, rtol=0, atol=largest, err_msg=message)
    assert np.sqrt(np.mean(difference**2)) <= rms, message


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_pixels_pinned.py --write  (overwrites tests/data/pinned_*.npy)")
    torch.set_num_threads(1)
    DATA_DIR.mkdir(exist_ok=True)
    for key, array in compute().items():
        np.save(DATA_DIR / f"pinned_{key}.npy", array)
        print(key, array.shape, float(np.abs(array).max()))
