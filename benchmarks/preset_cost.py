"""Seconds per slice and peak memory of each ReSample preset: measured end to end where that
fits, and for all an estimate from measured unit costs.

A preset's run is a fixed count of a few operations: noise-predictor evaluations, DPS gradient
steps (noise predictor, decoder and ``A`` forward and backward), latent-consistency iterations
(decoder and ``A`` forward and backward), pixel-consistency iterations (``A`` and ``A^T``),
decodes and encodes, all on the batch of slices times the preset's ``posterior_samples``, plus
the TV iterations (a TV warm start, the anchored-TV refinement of the mean) on the batch of slices. This script times each operation at
the batch sizes needed, counts them from the preset's step plan
(:func:`resample_med.sampling.schedule.plan_steps`) with every consistency running to its
iteration cap, and writes the product. TV itself (tuned weight) is timed end to end beside the
measured presets, so that their cost reads as a ratio to the classical solver. The estimate is high where
the discrepancy principle stops early (a batch stops only when its last item does) and low
where the vector arithmetic between the operations, which it leaves out, matters.

    python benchmarks/preset_cost.py --threads 2 --measure fast   # writes benchmarks/results/speed_cpu.md

It exists because the ``paper`` preset (500 steps, DPS at every step, up to 500 latent
iterations per consistency step) takes about an hour per slice on 2 CPU cores: too long to time
whole.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resample_med.evaluation.data import DEFAULT_DATA, Setting, load_split, simulate
from resample_med.evaluation.harness import DEFAULT_OUT
from resample_med.evaluation.runner import PeakMemory, load_prior, machine_description
from resample_med.models import bundle as bundle_module
from resample_med.pipeline import linearise
from resample_med.sampling import PRESETS, reconstruct
from resample_med.sampling.baselines.tv import PRESETS as TV_PRESETS
from resample_med.sampling.config import ReSampleConfig, posterior_samples
from resample_med.sampling.linalg import batch_sq_norm
from resample_med.sampling.schedule import plan_steps

UNIT_REPEATS = 3
"""Timed repetitions of each unit operation (the median is kept), after one warm-up call."""


@dataclass(frozen=True)
class UnitCosts:
    """Seconds per call of each operation at one batch size (``nan``: not timed at that size)."""

    network: float
    dps_gradient: float
    latent_iteration: float
    pixel_iteration: float
    decode: float
    encode: float
    decode_one_call: float = float("nan")
    encode_one_call: float = float("nan")


@dataclass(frozen=True)
class OperationCounts:
    """How many times a preset runs each operation for one batch (consistency at its cap): every
    operation but ``tv_iteration`` on the batch times ``samples`` posterior samples, the TV warm
    start's iterations (``A`` and ``A^T`` each) on the batch of slices."""

    network: int
    dps_gradient: int
    latent_iteration: int
    pixel_iteration: int
    decode: int
    encode: int
    tv_iteration: int = 0
    samples: int = 1

    def seconds(self, per_sample_batch: UnitCosts, per_slice_batch: UnitCosts | None = None) -> float:
        """Seconds of one run, from the unit costs at the batch times ``samples`` and at the batch."""
        slice_unit = per_sample_batch if per_slice_batch is None else per_slice_batch
        total = self.tv_iteration * slice_unit.pixel_iteration
        for name, count in (
            ("network", self.network),
            ("dps_gradient", self.dps_gradient),
            ("latent_iteration", self.latent_iteration),
            ("pixel_iteration", self.pixel_iteration),
            ("decode", self.decode),
            ("encode", self.encode),
        ):
            if count:  # an operation not timed at this size (nan) is not run
                total += count * getattr(per_sample_batch, name)
        return total


def count_operations(config: ReSampleConfig) -> OperationCounts:
    """Operation counts of one ReSample run with ``config`` (every consistency at its cap).

    A warm start skips the steps before ``warm_start_step`` and adds one encode; from TV it adds
    TV's PDHG and power iterations (``tv_iteration``, each one ``A`` and one ``A^T`` on the slices);
    the anchored-TV refinement of the mean adds its own (also on the slices, after the mean).
    """
    plans = plan_steps(config.num_steps, config.schedule)[config.warm_start_step :]
    n_dps = sum(p.dps for p in plans)
    n_network = sum(not p.dps for p in plans) + sum(p.time_travel for p in plans)
    n_pixel = sum(p.consistency == "pixel" for p in plans)
    n_latent = sum(p.consistency == "latent" for p in plans)
    latent_iters = n_latent * config.latent.max_iter
    pixel_iters = n_pixel * config.pixel.max_iter
    decodes, encodes = n_pixel + 1, n_pixel
    if config.warm_start != "none":
        encodes += 1
    tv_iters = 0
    if config.warm_start == "tv":
        tv_iters = config.warm_start_tv_iterations + TV_PRESETS["default"].power_iterations
    if config.refine_tv_weight > 0:
        tv_iters += config.refine_iterations + TV_PRESETS["default"].power_iterations
    if config.final_consistency == "latent":
        latent_iters += config.final_max_iter
    elif config.final_consistency == "pixel":
        pixel_iters += config.final_max_iter
    return OperationCounts(
        network=n_network,
        dps_gradient=n_dps,
        latent_iteration=latent_iters,
        pixel_iteration=pixel_iters,
        decode=decodes,
        encode=encodes,
        tv_iteration=tv_iters,
        samples=posterior_samples(config),
    )


def _median_seconds(fn: Callable[[], object]) -> float:
    fn()
    times = []
    for _ in range(UNIT_REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_unit_costs(prior: object, operator: object, y: torch.Tensor, gradients: bool = True) -> UnitCosts:
    """Time each operation on a batch of ``y.shape[0]`` slices (``y (B, 1, V, D)``); without
    ``gradients`` the DPS gradient and latent iteration are left ``nan``."""
    batch = y.shape[0]
    z = torch.randn(batch, *prior.latent_shape)
    t = torch.full((batch,), 500, dtype=torch.long)

    def network() -> object:
        with torch.no_grad():
            return prior.predict_noise(z, t)

    def gradient(through_network: bool) -> object:
        with torch.enable_grad():
            var = z.clone().requires_grad_(True)
            latent = prior.predict_noise(var, t) if through_network else var
            return torch.autograd.grad(batch_sq_norm(y - operator.forward(prior.decode(latent))).sum(), var)

    def pixel() -> object:
        with torch.no_grad():
            return operator.adjoint(operator.forward(operator.adjoint(y)))

    with torch.no_grad():
        image = prior.decode(z)
    with whole_batch_autoencoder():
        decode_one_call = _median_seconds(lambda: prior.decode(z)) if batch > 1 else float("nan")
        encode_one_call = _median_seconds(lambda: prior.encode(image)) if batch > 1 else float("nan")
    return UnitCosts(
        network=_median_seconds(network),
        dps_gradient=_median_seconds(lambda: gradient(True)) if gradients else float("nan"),
        latent_iteration=_median_seconds(lambda: gradient(False)) if gradients else float("nan"),
        pixel_iteration=_median_seconds(pixel),
        decode=_median_seconds(lambda: prior.decode(z)),
        encode=_median_seconds(lambda: prior.encode(image)),
        decode_one_call=decode_one_call,
        encode_one_call=encode_one_call,
    )


@contextmanager
def whole_batch_autoencoder() -> Iterator[None]:
    """The bundle's autoencoder calls on the whole batch at once, as on a GPU (the side-by-side
    reference of :data:`resample_med.models.bundle.CPU_AUTOENCODER_CHUNK`)."""
    saved = bundle_module.CPU_AUTOENCODER_CHUNK
    bundle_module.CPU_AUTOENCODER_CHUNK = sys.maxsize
    try:
        yield
    finally:
        bundle_module.CPU_AUTOENCODER_CHUNK = saved


def measure_method(prior: object, problem: object, method: str, preset: str) -> tuple[float, float]:
    """Seconds and peak memory (MiB, process peak RSS) of one end-to-end run of ``method`` with
    ``preset`` on the batch of ``problem``."""
    with PeakMemory(torch.device("cpu")) as memory:
        start = time.perf_counter()
        reconstruct(
            method,
            problem.y,
            problem.operator,
            prior=prior,
            config=preset,
            noise_std=problem.noise_std,
            generator=torch.Generator().manual_seed(0),
        )
        seconds = time.perf_counter() - start
    return seconds, memory.peak_mib


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--geometry", default="parallel", choices=["parallel", "fan"])
    p.add_argument("--views", type=int, default=30)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument(
        "--measure",
        nargs="*",
        default=[],
        choices=sorted(PRESETS),
        help="presets also run end to end (measured beside the estimate)",
    )
    p.add_argument("--model", default="default")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "speed_cpu.md")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    hu_all, _ = load_split(args.data, "val")
    prior, prior_text = load_prior(args.model, "cpu")
    setting = Setting(args.geometry, args.views)
    lines = [
        f"# Speed of the ReSample presets ({setting.label})",
        "",
        f"- **Date:** {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- **Machine:** {machine_description(torch.device('cpu'))}",
        f"- **Command:** `python benchmarks/preset_cost.py {shlex.join(sys.argv[1:] if argv is None else argv)}`",
        f"- **Prior:** {prior_text}",
        "",
        "Estimate = operation counts of the preset (every consistency at its iteration cap) x the measured "
        "seconds per operation, divided by the batch size (it leaves out the vector arithmetic between "
        "operations and ignores early stopping). Measured = one end-to-end run (discrepancy "
        "stopping active, I0 = 1e5), where run; peak MiB = the process's peak resident memory during "
        "that run (model and data included).",
        "",
    ]
    unit_rows, preset_rows = [], []
    units: dict[int, UnitCosts] = {}

    def unit_costs(batch: int, gradients: bool) -> UnitCosts:
        """Unit costs at ``batch`` (timed once per size; gradients only where a preset needs them)."""
        if batch not in units:
            problem = linearise(
                simulate(hu_all, np.arange(batch) % len(hu_all), setting, photons=1e5, pixel_spacing=1.4, seed=0)
            )
            units[batch] = measure_unit_costs(prior, problem.operator, problem.y, gradients)
            u = units[batch]
            unit_rows.append(
                f"| {batch} | {u.network:.3f} | {u.dps_gradient:.3f} | {u.latent_iteration:.3f} | "
                f"{u.pixel_iteration:.4f} | {u.decode:.3f} | {u.encode:.3f} | {u.decode_one_call:.3f} | "
                f"{u.encode_one_call:.3f} |".replace("nan", "-")
            )
            print(unit_rows[-1], flush=True)
        return units[batch]

    for batch in args.batches:
        problem = linearise(simulate(hu_all, np.arange(batch), setting, photons=1e5, pixel_spacing=1.4, seed=0))
        # End to end before the unit timings: their one-call autoencoder batches leave the process's
        # resident memory high, which would read as these runs' peak. One untimed TV run first builds
        # the projector and warms the allocator, so that TV's time is its solve.
        measured: dict[str, tuple[float, float]] = {}
        if args.measure:
            measure_method(prior, problem, "tv", "default")
            measured["tv"] = measure_method(prior, problem, "tv", "default")
            for name in args.measure:
                measured[name] = measure_method(prior, problem, "resample", name)
            tv_seconds, tv_peak = measured["tv"]
            preset_rows.append(
                f"| TV (tuned weight) | {batch} | - | - | - | - | - | - | {tv_seconds / batch:.2f} | 1.0 | {tv_peak:.0f} |"
            )
            print(preset_rows[-1], flush=True)
        for name, config in PRESETS.items():
            counts = count_operations(config)
            needs_gradients = bool(counts.dps_gradient or counts.latent_iteration)
            estimate = (
                counts.seconds(unit_costs(batch * counts.samples, needs_gradients), unit_costs(batch, False)) / batch
            )
            measured_text = "- | - | -"
            if name in measured:
                seconds, peak = measured[name]
                measured_text = f"{seconds / batch:.2f} | {seconds / measured['tv'][0]:.1f} | {peak:.0f}"
            preset_rows.append(
                f"| {name} | {batch} | {counts.samples} | {counts.network} | {counts.dps_gradient} | "
                f"{counts.latent_iteration} | {counts.pixel_iteration} + {counts.tv_iteration} | {estimate:.1f} | "
                f"{measured_text} |"
            )
            print(preset_rows[-1], flush=True)
        body = [
            "## Unit costs (seconds per call of the whole batch; - = not timed at that size)",
            "",
            f"decode / encode: as the bundle runs them on a CPU, {bundle_module.CPU_AUTOENCODER_CHUNK} image(s) "
            "per autoencoder call; one call: the whole batch in one autoencoder call (as on a GPU), timed "
            "beside them for comparison.",
            "",
            "| batch | network | DPS gradient | latent iteration | pixel iteration (A^T A) | decode | encode | "
            "decode (one call) | encode (one call) |",
            "|---|---|---|---|---|---|---|---|---|",
            *unit_rows,
            "",
            "## Presets (seconds per slice)",
            "",
            "Operation counts per run: every operation on the batch times the posterior samples, except "
            "the TV iterations of the warm start and of the refinement of the mean (second pixel term) on the batch of slices.",
            "",
            "| preset | batch | samples | network evals | DPS gradients | latent iterations | pixel iterations "
            "(+ TV iterations) | estimate s/slice | measured s/slice | measured / TV | measured peak MiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *preset_rows,
            "",
        ]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines + body) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
