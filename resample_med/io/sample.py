"""The real CT slices shipped for the demo and the tests (no network, no ../shared).

Each sample is one real CT slice from pydicom's test files (see ``sample_data/README.md`` for
provenance and licence), stored in ``sample_data/`` as an anonymised copy: private tags dropped,
patient name and ID replaced, pixel data and geometry byte-for-byte unchanged. When the package
is installed without the repository's ``sample_data/`` folder, the same slice is read from the
copy inside the installed pydicom wheel (only patient identity differs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from resample_med.io.errors import DicomInputError
from resample_med.io.volume import CTVolume

SAMPLE_DATA_DIR = Path(__file__).resolve().parents[2] / "sample_data"
"""The repository's top-level sample_data/ folder (present in a source checkout / editable install)."""

ANONYMOUS_NAME = "RESAMPLE_MED^SAMPLE"
"""PatientName and PatientID written into the committed sample files."""


@dataclass(frozen=True)
class SampleCT:
    """One shipped sample: file name in sample_data/, source file in pydicom's test data, description."""

    filename: str
    pydicom_file: str
    description: str


SAMPLE_CTS: dict[str, SampleCT] = {
    "head": SampleCT(
        "ct_head_tilted.dcm",
        "J2K_pixelrep_mismatch.dcm",
        "head CT, 1 slice, 512x512 at 0.431 mm, 5 mm thick, 22 deg gantry tilt, JPEG 2000 lossless",
    ),
    "small": SampleCT(
        "ct_small.dcm",
        "CT_small.dcm",
        "CT crop at the spine, 1 slice, 128x128 at 0.661 mm, uncompressed (NEMA WG04 CT1, downsized)",
    ),
}
"""Named samples; ``head`` is the demo default."""


def pydicom_test_file(name: str) -> Path:
    """Path of a CT file bundled inside the installed pydicom wheel (never downloaded)."""
    import pydicom.data

    path = Path(pydicom.data.__file__).resolve().parent / "test_files" / name
    if not path.is_file():
        raise DicomInputError(path, "pydicom's bundled test file is missing; reinstall pydicom or restore sample_data/")
    return path


def sample_ct_path(name: str = "head") -> Path:
    """The DICOM file of sample ``name``: sample_data/ if present, else pydicom's bundled original."""
    if name not in SAMPLE_CTS:
        raise KeyError(f"unknown sample CT '{name}'; choose from {sorted(SAMPLE_CTS)}")
    sample = SAMPLE_CTS[name]
    shipped = SAMPLE_DATA_DIR / sample.filename
    return shipped if shipped.is_file() else pydicom_test_file(sample.pydicom_file)


def derive_sample_file(name: str, out: str | os.PathLike[str]) -> Path:
    """Write the anonymised copy of sample ``name`` from pydicom's original to ``out``.

    This is how the files in sample_data/ were made; pixel data and geometry are untouched.
    """
    import pydicom

    ds = pydicom.dcmread(pydicom_test_file(SAMPLE_CTS[name].pydicom_file))
    ds.remove_private_tags()
    ds.PatientName = ANONYMOUS_NAME
    ds.PatientID = ANONYMOUS_NAME
    ds.SeriesDescription = f"resample-med sample: {SAMPLE_CTS[name].description}"[:64]
    out = Path(out)
    ds.save_as(out, enforce_file_format=True)
    return out


def load_sample_ct(name: str = "head") -> CTVolume:
    """The real sample CT ``name`` (see :data:`SAMPLE_CTS`) as a one-slice :class:`CTVolume`."""
    from resample_med.io.load import load_volume

    return load_volume(sample_ct_path(name))
