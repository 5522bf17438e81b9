"""What ``resample-med reconstruct INPUT`` means: the list of series (jobs) found under INPUT.

INPUT may be

* a sinogram file (``.npz`` / ``.npy`` + ``.json``, :mod:`resample_med.pipeline.sinogram_file`);
* a NIfTI file (``.nii`` / ``.nii.gz``);
* a DICOM file or a DICOM folder holding one study (files directly inside, possibly several
  series: the largest axial CT series by default, ``--series`` (UID or number) or
  ``--series-description`` to choose, ``--all-series`` for all);
* a folder of studies: a folder holding only sub-folders, each one study as above. A study that
  cannot be used becomes a failed job (reported, the others go on).

Job labels (output sub-folder names) come from folder names and tags: each is one safe path
component (:func:`resample_med.io.output_paths.safe_component`), unique among the jobs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from resample_med.io import DicomInputError, SeriesInfo, discover_series, select_series
from resample_med.io.discovery import default_series, describe_bad_files
from resample_med.io.nifti import is_nifti
from resample_med.io.output_paths import safe_component, unique_components
from resample_med.pipeline import is_sinogram_file


@dataclass(frozen=True)
class Job:
    """One series to reconstruct.

    Attributes:
        label: output sub-folder name, one safe path component ("" when INPUT is a single series:
            outputs go to OUTPUT).
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


def find_jobs(
    path: str | Path,
    series: str | None = None,
    all_series: bool = False,
    *,
    description: str | None = None,
    reserved: Iterable[str] = (),
) -> list[Job]:
    """The series to reconstruct under INPUT ``path`` (module docstring).

    Args:
        path: INPUT.
        series: SeriesInstanceUID or SeriesNumber of the series to take from each study.
        all_series: every axial CT series of each study.
        description: choose the series by a part of its SeriesDescription.
        reserved: names the labels must not take (files the caller writes beside the job folders).

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
        return _study_jobs(path, series, all_series, description, prefix="")
    studies = _studies(path)
    if not studies:
        return _study_jobs(path, series, all_series, description, prefix="")
    jobs: list[Job] = []
    for study in studies:
        label = safe_component(study.name, fallback="study")
        try:
            jobs.extend(_study_jobs(study, series, all_series, description, prefix=label))
        except DicomInputError as err:
            jobs.append(Job(label, "dicom", study, error=err))
    labels = unique_components([job.label for job in jobs], taken=reserved)
    return [replace(job, label=label) for job, label in zip(jobs, labels, strict=True)]


def _studies(path: Path) -> list[Path]:
    """The study folders of a folder of studies (only sub-folders in it), else []."""
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    studies = sorted(p for p in entries if p.is_dir())
    return studies if studies and not any(p.is_file() for p in entries) else []


def _study_jobs(path: Path, series: str | None, all_series: bool, description: str | None, prefix: str) -> list[Job]:
    """Jobs of one study folder (or DICOM file): the chosen series, or every axial CT series."""
    found = discover_series(path)
    if all_series:
        chosen = [s for s in found if s.modality == "CT" and s.orientation == "axial"]
        if not chosen:
            chosen = [select_series(found)]  # raises the reader's "no axial CT series" error
    else:
        chosen = [select_series(found, series, description=description)]
    if len(chosen) == 1:
        return [Job(prefix, "dicom", path, chosen[0])]
    labels = unique_components(safe_component("_".join(filter(None, [prefix, _series_label(s)]))) for s in chosen)
    return [Job(label, "dicom", path, s) for label, s in zip(labels, chosen, strict=True)]


def _series_label(series: SeriesInfo) -> str:
    """``S<number>_<description>`` (or the UID's tail) for a folder name (made safe by the caller)."""
    number = f"S{series.number}" if series.number is not None else series.uid[-12:]
    return f"{number}_{series.description}"


def list_series(path: str | Path) -> list[str]:
    """One line per series under INPUT ``path`` (each study of a folder of studies), the default marked.

    Raises:
        DicomInputError: INPUT does not exist, or is a single study without DICOM images.
    """
    path = Path(path)
    if not path.exists():
        raise DicomInputError(path, "does not exist")
    if path.is_file() and (is_nifti(path) or is_sinogram_file(path)):
        return [f"{path}: one {'NIfTI volume' if is_nifti(path) else 'sinogram file'}, no series to choose"]
    lines: list[str] = []
    for study in (_studies(path) if path.is_dir() else []) or [path]:
        try:
            found = discover_series(study)
        except DicomInputError as err:
            lines.append(f"{study}: {err.problem}")
            continue
        default = default_series(found)
        lines.append(f"{study}: {len(found)} series")
        lines.extend(f"  {s.summary()}{'  (default)' if s is default else ''}" for s in found)
        if found[0].bad_files:
            lines.append(f"  bad DICOM file(s): {describe_bad_files(found[0].bad_files)}")
    return lines
