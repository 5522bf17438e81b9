"""benchmarks/preset_cost.py: operation counts of the presets, worked out by hand from the schedule."""

from __future__ import annotations

import dataclasses

import pytest

from resample_med.sampling.config import FAST, PAPER


@pytest.fixture()
def preset_cost(benchmark_script):
    return benchmark_script("preset_cost")


def test_fast_preset_counts(preset_cost) -> None:
    # 20 steps, skip 2, first fifth free: pixel consistency at index 16, 14, ..., 2. From the TV
    # warm start at step 14 only index 4 and 2 remain (2 steps, each up to 20 CGLS iterations),
    # then a final 20-iteration CGLS fit; 6 network calls; 2 + 1 encodes (consistency, warm start);
    # on the slices, the warm start's 80 PDHG + 30 power iterations and the refinement's 40 + 30;
    # everything else on 2 samples per slice.
    counts = preset_cost.count_operations(FAST)
    assert counts == preset_cost.OperationCounts(
        network=6,
        dps_gradient=0,
        latent_iteration=0,
        pixel_iteration=2 * 20 + 20,
        decode=3,
        encode=3,
        tv_iteration=80 + 30 + 40 + 30,
        samples=2,
    )
    per_sample = preset_cost.UnitCosts(
        network=1.0, dps_gradient=float("nan"), latent_iteration=float("nan"), pixel_iteration=0.0, decode=0, encode=0
    )
    per_slice = dataclasses.replace(per_sample, network=0.0, pixel_iteration=1.0)
    # the network at the samples' batch, TV at the slices': untimed gradients are not run
    assert counts.seconds(per_sample, per_slice) == pytest.approx(6.0 + 80 + 30 + 40 + 30)


def test_paper_preset_counts_at_500_steps(preset_cost) -> None:
    # Consistency every 10th index 10..490: 16 free (340..490), 17 pixel (170..330), 16 latent
    # (10..160); DPS at every step; 5 time-travel evaluations before each of the 33 consistency steps.
    counts = preset_cost.count_operations(PAPER)
    assert counts.dps_gradient == 500
    assert counts.network == 33 * 5
    assert counts.pixel_iteration == 17 * 2000
    assert counts.latent_iteration == 16 * 500 + 500
    unit = preset_cost.UnitCosts(
        network=1.0, dps_gradient=0.0, latent_iteration=0.0, pixel_iteration=0.0, decode=0.0, encode=0.0
    )
    assert counts.seconds(unit) == pytest.approx(165.0)


def test_warm_start_counts(preset_cost) -> None:
    # from TV at step 10 of 20, one sample: pixel consistency at index 8, 6, 4, 2 only (4 steps),
    # 10 network calls, one extra encode, and the TV iterations of the warm start (80 + 30 power
    # iterations) and of the refinement (40 + 30)
    from dataclasses import replace

    config = replace(FAST, warm_start="tv", warm_start_skip_fraction=0.5, posterior_samples=1)
    counts = preset_cost.count_operations(config)
    assert counts == preset_cost.OperationCounts(
        network=10,
        dps_gradient=0,
        latent_iteration=0,
        pixel_iteration=4 * 20 + 20,
        decode=5,
        encode=5,
        tv_iteration=80 + 30 + 40 + 30,
        samples=1,
    )
