"""Running one method of the evaluation through the pipeline, with its cost, and scoring it.

Methods run through :func:`resample_med.pipeline.reconstruct_slices`: its batching
(``--batch-size`` slices per sampler call), its per-slice sampler streams
(:mod:`resample_med.pipeline.seeding`) and its per-slice metrics (:mod:`resample_med.metrics`:
PSNR and SSIM on the HU window [-1000, 1000] inside the reconstruction circle, HU-RMSE in the
circle, relative sinogram residual and ``chi2/m``) are the evaluation's.
"""

from __future__ import annotations

import os
import platform
import re
import resource
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from resample_med.evaluation.data import SOURCE_ROOT
from resample_med.pipeline import Measurements, SliceReconstruction, reconstruct_slices
from resample_med.sampling import resolve_method_config
from resample_med.sampling.registry import needs_prior

BASE_METHODS = ("fbp", "cgls", "tv", "latent_dps", "resample")
"""The methods compared by default, in table order."""
ABLATIONS = ("resample_no_resampling", "resample_stochastic_encoding")
"""ReSample without its resampling step, and with stochastic encoding (``--ablations``)."""
POSTERIOR_ROW = "resample_posterior"
"""Row of ReSample's posterior mean over ``--uncertainty-samples`` samples (with calibration figures)."""
MIB = 2**20

WEIGHTS_DIGEST_SHOWN = 12
"""Hex digits of the prior's weights digest (``resample_med.models.weights_digest``) shown in result
tables: enough to tell which prior measured a row."""


@dataclass
class MethodResult:
    """Per-slice metrics of one method at one setting, and its cost."""

    method: str
    config: dict[str, Any]
    psnr: list[float]
    ssim: list[float]
    hu_rmse: list[float]
    rel_residual: list[float]
    chi2_per_ray: list[float]
    seconds_per_slice: float
    peak_memory_mib: float
    slices: list[int] = field(default_factory=list)
    """Split indices of the scored slices, in the order of the metric lists."""
    extra: dict[str, Any] = field(default_factory=dict)


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak on GPU, else the process's peak resident set
    (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``; ``ru_maxrss`` where that fails)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib = float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / MIB
            return
        status = Path("/proc/self/status")
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.is_file() else None
        if match:
            self.peak_mib = int(match.group(1)) / 1024
        else:
            self.peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_method(
    method: str,
    measurements: Measurements,
    prior: Any,
    config: Any,
    *,
    batch_size: int,
    seed: int,
    n_samples: int | None = None,
) -> tuple[SliceReconstruction, float]:
    """Reconstruct every slice of ``measurements`` with :func:`~resample_med.pipeline.reconstruct_slices`.

    Returns ``(reconstruction, peak memory MiB)``; ``reconstruction.hu`` is ``(N, H, W)`` HU,
    ``std_hu`` the ``(N, H, W)`` posterior std with more than one sample (``n_samples``, or
    ``None``: the config's ``posterior_samples``), and ``per_slice`` the
    pipeline's metrics and sampler seconds of each slice.
    """
    device = measurements.sinogram.device
    with PeakMemory(device) as memory:
        rec = reconstruct_slices(
            measurements, method, prior, config, batch_size=batch_size, n_samples=n_samples, seed=seed
        )
    return rec, memory.peak_mib


def score(method: str, config: Any, rec: SliceReconstruction, slices: list[int], peak_mib: float) -> MethodResult:
    """The table row of ``rec`` (a reconstruction with a reference); ``slices`` are the split
    indices of its slices. Seconds per slice is the sampler's time (the pipeline's ``seconds``)."""
    rows = rec.per_slice
    return MethodResult(
        method=method,
        config=asdict(config),
        psnr=[r["psnr"] for r in rows],
        ssim=[r["ssim"] for r in rows],
        hu_rmse=[r["rmse_hu"] for r in rows],
        rel_residual=[r["residual"] for r in rows],
        chi2_per_ray=[r["discrepancy"] for r in rows],
        seconds_per_slice=sum(r["seconds"] for r in rows) / len(rows),
        peak_memory_mib=peak_mib,
        slices=[int(i) for i in slices],
    )


def load_prior(model: str, device: str) -> tuple[Any, str]:
    """The prior (``--model``: ``default`` or a bundle folder) and a one-line description."""
    from resample_med.models import LatentDiffusionBundle, load_default_model, weights_digest
    from resample_med.models.bundle import DEFAULT_MODEL_DIR

    if model == "default":
        bundle, where = load_default_model(device=device), DEFAULT_MODEL_DIR
    else:
        bundle, where = LatentDiffusionBundle.load(model, device=device), Path(model)
    arch = bundle.config.architecture
    n_params = sum(p.numel() for p in bundle.parameters())
    shown = where.relative_to(SOURCE_ROOT) if where.is_relative_to(SOURCE_ROOT) else where
    return bundle, (
        f"`{shown}` (architecture `{arch.name}`, {n_params / 1e6:.1f} M parameters, latent {bundle.latent_shape}, "
        f"weights sha256 {weights_digest(bundle)[:WEIGHTS_DIGEST_SHOWN]})"
    )


def method_config(method: str, preset: str, sampler: list[str]) -> Any:
    """The frozen config each method runs with (samplers: ``--preset``, ReSample and its ablations
    with the ``--sampler`` overrides; the rest: their default, TV with its tuned weight)."""
    if method == POSTERIOR_ROW:
        method = "resample"
    if method == "latent_dps":
        return resolve_method_config(method, preset)
    if needs_prior(method):
        return sampler_config(preset, sampler, resample_variant=method)
    return resolve_method_config(method, "default")


def sampler_config(preset: str, sampler: list[str], resample_variant: str = "resample") -> Any:
    """``preset``'s ReSample config with the ``--sampler KEY=VALUE`` overrides (values read as YAML).

    Raises:
        SystemExit: an override is not ``KEY=VALUE`` of a config field, or its value is refused.
    """
    config = resolve_method_config(resample_variant, preset)
    names = [f.name for f in fields(config)]
    changes = {}
    for item in sampler:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise SystemExit(
                f"--sampler {item!r} is not KEY=VALUE with KEY a ReSampleConfig field ({', '.join(names)})"
            )
        changes[key] = yaml.safe_load(value)
    try:
        return replace(config, **changes)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"--sampler {' '.join(sampler)}: {err}") from err


def machine_description(device: torch.device) -> str:
    """Host, cores, torch version and threads (and the GPU) for report headers."""
    cpu = platform.processor() or platform.machine()
    text = (
        f"{platform.node()}: {os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text
