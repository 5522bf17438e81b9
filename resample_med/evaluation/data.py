"""The evaluation's data: validation slices of an npz, the settings, and their simulated measurements.

A setting is one acquisition (geometry, number of views) and one way of simulating its data
(``independent``: the finer model of :mod:`resample_med.operators.fine_model`; ``matched``: the
reconstructing projector itself, the inverse crime). Measurements are simulated through
:func:`resample_med.pipeline.simulate_model_slices`, which draws every slice's noise from its own
generator (:mod:`resample_med.pipeline.seeding`) keyed by the slice's index in the split, so a
slice has the same data whichever subset of the split is evaluated with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resample_med.pipeline import AcquisitionConfig, Measurements, simulate_model_slices

SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The checkout (or site-packages folder) holding the package."""
DEFAULT_DATA = SOURCE_ROOT.parent / "shared" / "data" / "ct_hu256.npz"
"""The project layout's slice file (``../shared/data`` beside the checkout)."""
SIMULATIONS = ("independent", "matched")
"""Ways of simulating the data, the default first (``AcquisitionConfig.simulation``)."""
SIMULATION_TEXT = (
    "independent = a 2x finer bicubic grid projected with two sub-rays per detector bin and "
    "intensity averaged per bin, same scanner; matched = the reconstructing projector itself "
    "(the inverse crime)"
)


@dataclass(frozen=True)
class Setting:
    """One acquisition of the benchmark and how its data are simulated."""

    geometry: str
    n_views: int
    simulation: str = SIMULATIONS[0]

    @property
    def label(self) -> str:
        return f"{self.geometry}, {self.n_views} views, {self.simulation} simulation"

    @classmethod
    def from_label(cls, label: str) -> Setting:
        """Inverse of :attr:`label`; labels of runs before simulations were named (``"fan, 20 views"``)
        are ``matched``, the only simulation there was."""
        parts = label.split(", ")
        simulation = parts[2].removesuffix(" simulation") if len(parts) > 2 else "matched"
        return cls(parts[0], int(parts[1].split()[0]), simulation)

    def noise_seed(self, seed: int) -> int:
        """The pipeline seed of this setting's noise: one stream per acquisition, shared by both
        simulations so that they differ only by the model that computed the line integrals."""
        return seed + 1000 * self.n_views + (0 if self.geometry == "parallel" else 17)


@dataclass(frozen=True)
class SplitSlice:
    """One slice of the split as :func:`~resample_med.pipeline.simulate_model_slices` reads it."""

    hu: np.ndarray
    """``(H, W)`` float32 HU."""
    pixel_spacing_mm: float
    index: int
    """Index in the split (keys the slice's noise stream)."""


def load_split(path: Path, split: str) -> tuple[np.ndarray, list[str]]:
    """HU slices ``(N, 256, 256)`` float32 of ``split`` and their ``patient (anatomy)`` ids.

    Raises:
        SystemExit: ``path`` is missing or has no slice in ``split`` (the message names ``--data`` / ``--split``).
    """
    if not path.is_file():
        raise SystemExit(
            f"--data {path}: no such file; pass the npz of HU slices with train/val splits "
            f"(the project keeps it at ../shared/data/ct_hu256.npz)"
        )
    data = np.load(path)
    idx = np.flatnonzero(data["split"] == split)
    if idx.size == 0:
        splits = sorted(set(data["split"].tolist()))
        raise SystemExit(f"--split {split}: {path} has no slice in that split (it has {splits})")
    ids = [f"{data['patient'][i]} ({data['anatomy'][i]})" for i in idx]
    return data["images_hu"][idx].astype(np.float32), ids


def evaluation_indices(n_total: int, n_slices: int | None) -> np.ndarray:
    """``n_slices`` evenly spaced indices of ``range(n_total)`` (all when ``None``)."""
    if n_slices is None or n_slices >= n_total:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, n_slices).round().astype(int))


def simulate(
    hu_split: np.ndarray,
    indices: np.ndarray,
    setting: Setting,
    *,
    photons: float,
    pixel_spacing: float,
    seed: int,
    device: torch.device | str = "cpu",
) -> Measurements:
    """Measurements of the slices ``indices`` of ``hu_split (N, H, W)`` at ``setting``.

    Poisson noise of ``photons`` per ray, post-log; slice ``i``'s noise comes from the pipeline's
    stream ``(setting.noise_seed(seed), "noise", i)``. ``reference_hu`` holds the slices
    (clipped at -1000 HU).
    """
    acquisition = AcquisitionConfig(
        geometry=setting.geometry, n_views=setting.n_views, photons=photons, simulation=setting.simulation
    )
    slices = [SplitSlice(hu_split[int(i)], float(pixel_spacing), int(i)) for i in indices]
    return simulate_model_slices(slices, acquisition, setting.noise_seed(seed), device=device)
