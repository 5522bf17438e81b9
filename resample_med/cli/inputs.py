"""What ``resample-med reconstruct INPUT`` means: the list of series (jobs) found under INPUT.

INPUT may be

* a sinogram file (``.npz`` / ``.npy`` + ``.json``, :mod:`resample_med.pipeline.sinogram_file`);
* a NIfTI file (``.nii`` / ``.nii.gz``);
* a DICOM file or a DICOM folder holding one study (files directly inside, possibly several
  series: the largest axial CT series by default, ``--series`` to choose, ``--all-series`` for all);
* a folder of studies: a folder holding only sub-folders, each one study as above. A study that
  cannot be used becomes a failed job (reported, the others go on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from resample_med.io import DicomInputError, SeriesInfo, discover_series, select_series
from resample_med.pipeline import is_sinogram_file

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Job:
    """One series to reconstruct.

    Attributes:
        label: output sub-folder name ("" when INPUT is a single series: outputs go to OUTPUT).
        kind: ``"dicom"``, ``"nifti"`` or ``"sinogram"``.
        path: the file or study folder to read.
        series: the chosen DICOM series (``kind == "dicom"``), else ``None``.
        error: why this study cannot be reconstructed (found while scanning), else ``None``.
    """

    label: str
    kind: str
    path: Path
    series: SeriesInfo | None = None
    error: DicomInputError | None = None

    @property
    def name(self) -> str:
        """How the job is named in progress bars and summaries."""
        return self.label or self.path.name


def is_nifti(path: Path) -> bool:
    """Whether ``path`` names a NIfTI file."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def find_jobs(path: str | Path, series: str | None = None, all_series: bool = False) -> list[Job]:
    """The series to reconstruct under INPUT ``path`` (module docstring).

    Raises:
        DicomInputError: INPUT does not exist, or is a single study that cannot be used.
    """
    path = Path(path)
    if not path.exists():
        raise DicomInputError(path, "does not exist")
    if path.is_file():
        if is_sinogram_file(path):
            return [Job("", "sinogram", path)]
        if is_nifti(path):
            return [Job("", "nifti", path)]
        return _study_jobs(path, series, all_series, prefix="")
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    studies = sorted(p for p in entries if p.is_dir())
    if studies and not any(p.is_file() for p in entries):
        jobs: list[Job] = []
        for study in studies:
            try:
                jobs.extend(_study_jobs(study, series, all_series, prefix=_safe(study.name)))
            except DicomInputError as err:
                jobs.append(Job(_safe(study.name), "dicom", study, error=err))
        return jobs
    return _study_jobs(path, series, all_series, prefix="")


def _study_jobs(path: Path, series: str | None, all_series: bool, prefix: str) -> list[Job]:
    """Jobs of one study folder (or DICOM file): the chosen series, or every axial CT series."""
    found = discover_series(path)
    if all_series:
        chosen = [s for s in found if s.modality == "CT" and s.orientation == "axial"]
        if not chosen:
            chosen = [select_series(found)]  # raises the reader's "no axial CT series" error
    else:
        chosen = [select_series(found, series)]
    if len(chosen) == 1:
        return [Job(prefix, "dicom", path, chosen[0])]
    return [Job("_".join(filter(None, [prefix, _series_label(s)])), "dicom", path, s) for s in chosen]


def _series_label(series: SeriesInfo) -> str:
    """``S<number>_<description>`` (or the UID's tail) as a folder name."""
    number = f"S{series.number}" if series.number is not None else series.uid[-12:]
    return _safe(f"{number}_{series.description}".strip("_"))


def _safe(name: str) -> str:
    """``name`` with characters unsafe in folder names replaced by ``_``."""
    return _UNSAFE.sub("_", name).strip("_") or "series"
