"""Measurements on disk: the sinogram file read by ``resample-med reconstruct`` and written by ``simulate``.

Two layouts, the same content:

* ``NAME.npz`` with arrays ``sinogram`` ``(N, V, D)`` float32 post-log data, optionally
  ``reference_hu`` ``(N, H, W)`` (ground truth, enables metrics), and ``meta``: a JSON string;
* ``NAME.npy`` holding the sinogram, with the JSON in ``NAME.json`` beside it.

The JSON (``format`` = ``"resample-med-sinogram"``, ``version`` = 1) holds ``geometry``
(:meth:`Geometry.to_dict`, exactly the geometry the data were measured with), ``acquisition``
(:meth:`AcquisitionConfig.to_dict`, whose ``photons`` / ``gaussian_sigma`` set the noise model) and
``pixel_spacing_mm``. Example for real data measured elsewhere::

    {"format": "resample-med-sinogram", "version": 1, "pixel_spacing_mm": 1.0,
     "geometry": {...ParallelBeamGeometry.sparse_view(60).to_dict()...},
     "acquisition": {"geometry": "parallel", "n_views": 60, "photons": 100000.0}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resample_med.geometry import geometry_from_dict
from resample_med.operators import make_projector
from resample_med.pipeline.acquisition import AcquisitionConfig
from resample_med.pipeline.measurements import Measurements, noise_variance

FORMAT_NAME = "resample-med-sinogram"
FORMAT_VERSION = 1
SINOGRAM_SUFFIXES = (".npz", ".npy")


class SinogramFileError(ValueError):
    """A sinogram file is missing, malformed or inconsistent; the message names the file."""


def is_sinogram_file(path: str | Path) -> bool:
    """Whether ``path`` names a sinogram file by its suffix (``.npz`` / ``.npy``)."""
    return Path(path).suffix.lower() in SINOGRAM_SUFFIXES


def save_measurements(path: str | Path, measurements: Measurements) -> Path:
    """Write ``measurements`` to ``path`` (``.npz``, or ``.npy`` + ``.json``); returns ``path``."""
    path = Path(path)
    meta = json.dumps(_meta(measurements), indent=2)
    sinogram = measurements.sinogram.detach().cpu().numpy().astype(np.float32)
    if path.suffix.lower() == ".npy":
        np.save(path, sinogram)
        path.with_suffix(".json").write_text(meta)
        return path
    if path.suffix.lower() != ".npz":
        raise SinogramFileError(f"{path}: a sinogram file must end in .npz or .npy")
    arrays: dict[str, np.ndarray] = {"sinogram": sinogram, "meta": np.array(meta)}
    if measurements.reference_hu is not None:
        arrays["reference_hu"] = measurements.reference_hu.detach().cpu().numpy().astype(np.float32)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    return path


def load_measurements(path: str | Path, device: torch.device | str | None = None) -> Measurements:
    """Read a sinogram file (see module docstring) into :class:`Measurements` on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise SinogramFileError(f"{path}: no such sinogram file")
    reference = None
    try:
        if path.suffix.lower() == ".npy":
            sidecar = path.with_suffix(".json")
            if not sidecar.is_file():
                raise SinogramFileError(f"{path}: the geometry file {sidecar.name} is missing beside it")
            sinogram = np.load(path)
            meta = json.loads(sidecar.read_text())
        else:
            with np.load(path) as data:
                if "sinogram" not in data.files or "meta" not in data.files:
                    raise SinogramFileError(f"{path}: expected arrays 'sinogram' and 'meta', found {data.files}")
                sinogram = data["sinogram"]
                meta = json.loads(str(data["meta"]))
                reference = data["reference_hu"] if "reference_hu" in data.files else None
    except (OSError, ValueError) as err:
        if isinstance(err, SinogramFileError):
            raise
        raise SinogramFileError(f"{path}: cannot read sinogram file: {err}") from err
    return _measurements_from(path, sinogram, meta, reference, device)


def _meta(measurements: Measurements) -> dict[str, Any]:
    """The JSON header of a sinogram file."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "geometry": measurements.projector.geometry.to_dict(),
        "acquisition": measurements.acquisition.to_dict(),
        "pixel_spacing_mm": measurements.pixel_spacing_mm,
    }


def _measurements_from(
    path: Path,
    sinogram: np.ndarray,
    meta: dict[str, Any],
    reference: np.ndarray | None,
    device: torch.device | str | None,
) -> Measurements:
    """Validate a loaded file and build :class:`Measurements`."""
    if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
        raise SinogramFileError(
            f"{path}: not a {FORMAT_NAME} v{FORMAT_VERSION} file (format={meta.get('format')!r}, "
            f"version={meta.get('version')!r})"
        )
    missing = [k for k in ("geometry", "acquisition", "pixel_spacing_mm") if k not in meta]
    if missing:
        raise SinogramFileError(f"{path}: header lacks {missing}")
    try:
        geometry = geometry_from_dict(meta["geometry"])
        acquisition = AcquisitionConfig.from_dict(meta["acquisition"])
    except (KeyError, TypeError, ValueError) as err:
        raise SinogramFileError(f"{path}: bad geometry or acquisition in header: {err}") from err
    if sinogram.ndim == 2:
        sinogram = sinogram[None]
    expected = (geometry.n_views, geometry.det_count)
    if sinogram.ndim != 3 or tuple(sinogram.shape[1:]) != expected:
        raise SinogramFileError(
            f"{path}: sinogram shape {sinogram.shape} does not match the geometry's (N, {expected[0]}, {expected[1]})"
        )
    projector = make_projector(geometry, device=device)
    y = torch.as_tensor(np.asarray(sinogram, dtype=np.float32), device=projector.device)
    return Measurements(
        sinogram=y,
        projector=projector,
        acquisition=acquisition,
        pixel_spacing_mm=float(meta["pixel_spacing_mm"]),
        noise_variance=noise_variance(y, acquisition),
        reference_hu=None if reference is None else torch.as_tensor(reference, device=projector.device),
    )
